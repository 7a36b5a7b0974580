"""Workflows built on the library and the Ultralytics seam: fine-tuning, schedules and recipes with
their history, criterion comparisons, sensitivity measurement, the digits dataset. They may import
yolo/ and reports/; the engine (graph/, importance/, pruning/) and yolo/ never import them."""
