"""Segment Anything fine-tuning on image/mask folders (see task.py for the parts)."""
from segdet.tasks.sam.task import SamTask as TASK

__all__ = ["TASK"]
