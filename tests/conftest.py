"""Test-session setup: keep Ultralytics offline and its settings/cache files out of the home directory.

These variables must be set before ultralytics is first imported, hence module level.
"""

import os
import tempfile
from pathlib import Path

_SCRATCH = Path(tempfile.gettempdir()) / "yoloprune-tests"
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(_SCRATCH / "ultralytics"))
os.environ.setdefault("MPLCONFIGDIR", str(_SCRATCH / "matplotlib"))
