"""Training with 2 real gloo processes on the CPU: DDP (with exact resume) and DeepSpeed ZeRO-1/2/3."""

import shutil
from pathlib import Path

import pytest
from helpers.train_dist import assert_deepspeed_run, assert_invariants, deepspeed_env, launch_trainer
from helpers.training import tiny_recipe

from nt_llm.train.metrics import read_metrics


def losses_after(run: Path, step: int) -> dict[int, float]:
    return {
        e["step"]: e["loss"] for e in read_metrics(run / "metrics.jsonl") if e["event"] == "train" and e["step"] > step
    }


def test_ddp_trains_with_invariants_and_resumes_exactly(tmp_path: Path) -> None:
    straight = launch_trainer(tmp_path, tiny_recipe(tmp_path, data={"batch_size": 2}), {})
    assert_invariants(straight, "MULTI_CPU")

    resumed_run = tmp_path / "resumed"
    (resumed_run / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "run" / "checkpoints" / "step_3", resumed_run / "checkpoints" / "step_3")
    recipe = tiny_recipe(tmp_path, data={"batch_size": 2}, run={"output_dir": str(resumed_run)})
    resumed = launch_trainer(tmp_path, recipe, {}, resume="latest")
    assert_invariants(resumed, "MULTI_CPU")
    assert losses_after(resumed_run, 3) == losses_after(tmp_path / "run", 3)
    assert sorted(losses_after(resumed_run, 3)) == [4, 5, 6]
    assert resumed["metrics"]["ensemble_loss"] == straight["metrics"]["ensemble_loss"]


# Slow, a launch per stage: the default run trains ZeRO-3 in tests/test_export_zero3.py (the same checks, then an
# export of its shards), and tests/test_sparse_distributed.py holds DST's invariants under ZeRO-2 and ZeRO-3.
@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_deepspeed_zero_trains_with_invariants(tmp_path: Path, stage: int) -> None:
    summary = launch_trainer(tmp_path, tiny_recipe(tmp_path, data={"batch_size": 2}), deepspeed_env(tmp_path, stage))
    assert_deepspeed_run(summary, tmp_path / "run", stage)
