"""``python -m nt_llm.evaluation MODEL FILE ...``: the same as ``nt-llm evaluate`` (nt_llm.cli.evaluate)."""

import sys

from nt_llm.cli import main

sys.exit(main(["evaluate", *sys.argv[1:]]))
