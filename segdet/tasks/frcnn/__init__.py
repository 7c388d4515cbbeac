"""Faster R-CNN (Ren et al. 2015): VGG16 / ResNet-50 C4 backbones, RPN, RoI head, VOC/COCO/synthetic data."""
from .task import FrcnnTask as TASK

__all__ = ["TASK"]
