"""`python -m yoloprune.cli ARGS`: the same as the `yoloprune` command."""

import sys

from yoloprune.cli.parser import main

if __name__ == "__main__":
    sys.exit(main())
