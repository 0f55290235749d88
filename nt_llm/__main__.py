"""``python -m nt_llm COMMAND ...``: the same as the ``nt-llm`` console script (see nt_llm.cli)."""

import sys

from nt_llm.cli import main

sys.exit(main())
