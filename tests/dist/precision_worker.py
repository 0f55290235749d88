"""Two-process worker for tests/test_precision.py: ranks that would resolve ``optim.precision: auto`` differently.

    torchrun --nproc_per_node 2 tests/dist/precision_worker.py RECIPE.yaml OUT_DIR NATIVE_RANK0,NATIVE_RANK1

Each rank pretends to have the CPU named for it (``amx_bf16``, ``avx512_bf16`` or ``none``), trains the recipe
and writes ``OUT_DIR/rank<r>.json``: the precision it trained in and the Accelerator's mixed precision.
"""

import argparse
import json
import os
from pathlib import Path

from nt_llm import precision
from nt_llm.cli.train import leave_process_group
from nt_llm.train import load_recipe
from nt_llm.train.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("out", type=Path)
    parser.add_argument("native", help="comma-separated, one per rank")
    args = parser.parse_args()

    rank = int(os.environ["RANK"])
    native = args.native.split(",")[rank]
    precision.cpu_native_bf16 = lambda: None if native == "none" else native  # this process's CPU, as pretended
    trainer = Trainer(load_recipe(args.recipe))
    trainer.run(resume=None)
    record = {"precision": trainer.precision.name, "mixed_precision": trainer.accelerator.mixed_precision}
    (args.out / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
    leave_process_group()
