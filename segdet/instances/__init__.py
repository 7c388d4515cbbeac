"""Instance masks as every task writes and scores them, below the tasks (no task is imported here).

``masks``: boxes filled as masks, masks made an id map. ``drawing``: boxes and tinted instances on an image.
``outputs``: what a predict of instances writes (``masks/<stem>.png`` 16-bit id maps, overlays, ``instances.json``
with COCO RLE, ``images.json``, ``categories.json``) through ``files.prediction_outputs``. ``coco_eval``:
pycocotools' COCOeval against a COCO instance file, by class or class-agnostic. Detect → segment, segment
everything and any other task that finds instances use these and nothing of each other's.
"""
