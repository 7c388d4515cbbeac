"""Semantic segmentation, and instances from the same dense decoder (see task.py for the parts)."""
from segdet.tasks.semantic.task import SemanticTask as TASK

__all__ = ["TASK"]
