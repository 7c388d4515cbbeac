"""Detect → segment: a trained detector's boxes prompt SAM, one mask per detection (see task.py)."""
from .task import DetSegTask as TASK

__all__ = ["TASK"]
