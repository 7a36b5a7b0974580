"""yoloprune: safe, explainable, measurable structured channel pruning for Ultralytics YOLO."""

__version__ = "0.1.0"
