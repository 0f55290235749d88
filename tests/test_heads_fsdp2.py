"""The heads' execution path works unchanged under FSDP2 (fully_shard per decoder block), with 2 real gloo processes:
each head's transformers modules unshard when they run, so nothing in the model knows how it is sharded."""

import json
import os
from pathlib import Path

import pytest
from helpers.dist import torchrun_two

WORKER = Path(__file__).parent / "dist" / "heads_fsdp2_worker.py"


# Slow (a launch of its own): the default run has FSDP2 under the trainer (tests/test_train_fsdp2.py) and DST's FSDP2
# updates equal to one process's (tests/test_sparse_distributed.py); the heads' execution path in one process is
# tests/test_modeling.py's.
@pytest.mark.slow
def test_fsdp2_step_matches_one_process(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    torchrun_two(WORKER, str(summary_file), env=env, cwd=tmp_path)
    summary = json.loads(summary_file.read_text())
    assert summary["world_size"] == 2
    assert summary["parameters"] > 0
    assert summary["max_grad_difference"] < 1e-5
