"""``accelerate launch pretrain.py --recipe recipes/X.yaml [section.key=value ...] [--resume latest|PATH]``:
the same as ``nt-llm train`` (nt_llm.cli), kept as a file for launchers that take a script path."""

import sys

from nt_llm.cli import parse_train_args as parse_args
from nt_llm.cli import train_main as main

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
