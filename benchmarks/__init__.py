"""segdet's benchmarks, side by side with what users would run instead (``python -m benchmarks``, ``make bench``).

``run`` is the table and its command line; ``settings`` every setting a row reads; ``common`` what the rows share
(configs, timing, memory, one side in a fresh process: ``side``); one module per row family (``sam``, ``frcnn``,
``detseg``, ``amg``, ``annotate``, ``scene``). ``family`` (the SAM family's training on a GPU) and the soak runs
(``soak``, ``soak_annotate``: ``make soak``) run on their own: ``python -m benchmarks.family`` ... Run from the
checkout's root, where ``segdet`` is importable (installed or not).
"""
