"""The `yoloprune` command line: `parser` declares the arguments (torch-free, so `--help` is fast),
`commands` runs each subcommand over the library, `demo` is `make demo`. Nothing outside this package
imports it; it translates the library's field names into `--flags`."""

from yoloprune.cli.parser import main

__all__ = ["main"]
