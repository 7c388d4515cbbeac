"""segdet: fine-tune Segment Anything and train Faster R-CNN from one config-driven CLI."""
__version__ = "0.1.0"
