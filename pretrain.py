"""``accelerate launch pretrain.py --recipe recipes/X.yaml [section.key=value ...] [--resume latest|PATH]``:
the same as ``nt-llm train`` (nt_llm.cli.train), kept as a file for launchers that take a script path."""

import sys

from nt_llm.cli.train import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
