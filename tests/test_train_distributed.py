"""Training with 2 real gloo processes on the CPU: DDP (with exact resume) and DeepSpeed ZeRO-1/2/3."""

import shutil
from pathlib import Path

import pytest
from helpers.train_dist import assert_invariants, deepspeed_env, launch_trainer
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


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_trains_with_invariants(tmp_path: Path, stage: int) -> None:
    summary = launch_trainer(tmp_path, tiny_recipe(tmp_path, data={"batch_size": 2}), deepspeed_env(tmp_path, stage))
    assert_invariants(summary, "DEEPSPEED")
    assert summary["zero_stage"] == stage
    # The same model under every engine: no engine rewrites the config (ZeRO-3 included).
    assert not {"head_execution", "loss_reduction", "loss_chunk_size"} & set(summary["config_keys"])
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train = [e for e in metrics if e["event"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]


@pytest.mark.slow
def test_deepspeed_zero1_trains_with_invariants(tmp_path: Path) -> None:
    summary = launch_trainer(tmp_path, tiny_recipe(tmp_path, data={"batch_size": 2}), deepspeed_env(tmp_path, 1))
    assert_invariants(summary, "DEEPSPEED")
