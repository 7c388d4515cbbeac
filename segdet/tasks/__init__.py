"""The tasks segdet knows, in one place: ``--help``, errors and the commands read this table.

Each task lives in its own subpackage (``segdet.tasks.<name>``, exporting ``TASK``) with its config in
``conf/common/task/<name>.yaml`` and its own groups in ``conf/<name>/``; it is imported only when asked for. A task
has the commands its entry lists; for the others the CLI says, in one line, what to run instead.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from segdet.errors import SegdetError


@dataclass(frozen=True)
class TaskInfo:
    what: str                                            # one line for --help
    commands: tuple[str, ...] = ("train", "eval", "predict", "export")
    instead: str = ""                                    # what to run for a command the task does not have


TASKS = {
    "sam": TaskInfo("fine-tune Segment Anything for binary segmentation",
                    ("train", "eval", "predict", "export", "annotate")),
    "frcnn": TaskInfo("Faster R-CNN object detection (VGG16, the paper's way)"),
    "semantic": TaskInfo("a class for every pixel (SAM-family encoder + UNETR decoder, or a UNet), instances too"),
    "detseg": TaskInfo("detect -> segment: a frcnn detector's boxes prompt SAM (classed instance masks)",
                       ("eval", "predict"),
                       "task=detseg joins two models trained (and exported) on their own: train its detector with "
                       "'segdet train task=frcnn ...' and its segmenter with 'segdet train task=sam ...' (both take "
                       "data=coco), then pass detector=PATH segmenter=PATH"),
}


def check_command(task: str, command: str) -> None:
    """A one-line error when ``task`` has no ``command``."""
    info = TASKS[task]
    if command not in info.commands:
        raise SegdetError(f"task={task} has no '{command}' command (it has: {', '.join(info.commands)}); "
                          + (info.instead or "use another task"))


def get_task_class(name: str):
    if name not in TASKS:
        raise SegdetError(f"unknown task '{name}'; choose from: {', '.join(TASKS)}")
    return importlib.import_module(f"segdet.tasks.{name}").TASK
