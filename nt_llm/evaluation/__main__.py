"""``python -m nt_llm.evaluation MODEL FILE ...``: see nt_llm.evaluation.cli."""

import sys

from nt_llm.evaluation.cli import main

sys.exit(main())
