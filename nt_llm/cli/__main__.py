"""``python -m nt_llm.cli COMMAND ...`` (what the studies and ``accelerate launch -m nt_llm.cli`` run): the same as
the ``nt-llm`` console script."""

import sys

from nt_llm.cli import main

sys.exit(main())
