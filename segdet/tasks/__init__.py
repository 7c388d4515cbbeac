"""Tasks are found by name; each lives in its own subpackage and is imported only when asked for."""
from __future__ import annotations

import importlib

from segdet.registry import SegdetError

TASK_NAMES = ("sam", "frcnn")


def get_task_class(name: str):
    if name not in TASK_NAMES:
        raise SegdetError(f"unknown task '{name}'; choose from: {', '.join(TASK_NAMES)}")
    return importlib.import_module(f"segdet.tasks.{name}").TASK
