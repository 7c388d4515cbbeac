"""The commands, in one place: the CLI, ``--help`` and the Hydra layer read this table.

Each command is a module with ``run(cfg, run_dir)`` that builds the objects and hands them to the engine, and a
primary config of the same name in ``conf/common/`` (``train.yaml`` ...). Commands never import each other: what
they share lives in the engine (``engine.checkpoint``, ``engine.runtime``, ``engine.session``).
"""
from __future__ import annotations

# name -> (module, what it does, an example)
COMMANDS = {
    "train": ("segdet.commands.train", "fit a model", "segdet train task=sam data=folder data.root=DIR"),
    "eval": ("segdet.commands.evaluate", "score a checkpoint", "segdet eval task=sam ckpt=PATH [data.root=DIR]"),
    "predict": ("segdet.commands.predict", "write predictions of a ckpt",
                "segdet predict task=frcnn ckpt=PATH input=DIR"),
    "export": ("segdet.commands.export", "write a ckpt for other tools", "segdet export ckpt=PATH format=onnx "
               "output=DIR"),
    "annotate": ("segdet.commands.annotate", "annotate images with SAM clicks", "segdet annotate data.root=DIR "
                 "[segmenter=PATH]"),
}
ALIASES = {"evaluate": "eval"}
TASK_FROM_CHECKPOINT = ("export",)  # commands whose task is the checkpoint's, not given as task=
IMPLIED_TASK = {"annotate": "sam"}  # commands of one task, which the command line does not name
