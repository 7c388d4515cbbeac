"""The tasks segdet knows, in one place: ``--help``, errors and the commands read this table.

Each task lives in its own subpackage (``segdet.tasks.<name>``, exporting ``TASK``) with its config in
``conf/task/<name>.yaml`` and its own groups in ``conf/<name>/``; it is imported only when asked for.
"""
from __future__ import annotations

import importlib

from segdet.errors import SegdetError

TASKS = {
    "sam": "fine-tune Segment Anything for binary segmentation",
    "frcnn": "Faster R-CNN object detection (VGG16, the paper's way)",
}


def get_task_class(name: str):
    if name not in TASKS:
        raise SegdetError(f"unknown task '{name}'; choose from: {', '.join(TASKS)}")
    return importlib.import_module(f"segdet.tasks.{name}").TASK
