"""Training with 2 real gloo processes on the CPU: DDP (with exact resume) and DeepSpeed ZeRO-1/2/3."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.training import tiny_recipe

from nt_llm.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "dist" / "train_worker.py"


def launch(tmp_path: Path, recipe: dict, env_extra: dict[str, str], resume: str | None = None) -> dict:
    """torchrun 2 processes on the worker; returns rank 0's summary."""
    recipe_path = tmp_path / f"recipe-{len(list(tmp_path.glob('recipe-*')))}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    summary = recipe_path.with_suffix(".json")
    env = {
        **os.environ,
        **env_extra,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO / "tests"),
        # DeepSpeed's CPU communication op is compiled once (about 30 s) and reused from here.
        "TORCH_EXTENSIONS_DIR": os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions")
        ),
    }
    env.pop("ACCELERATE_USE_CPU", None)  # DeepSpeed refuses it; gloo is chosen by the trainer on CPU
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(recipe_path),
        str(summary),
    ] + (["--resume", resume] if resume else [])
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return json.loads(summary.read_text())


def deepspeed_env(tmp_path: Path, stage: int) -> dict[str, str]:
    config = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        # Partition every tensor, however small: the tiny model would otherwise stay whole under ZeRO-3.
        "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
    }
    path = tmp_path / f"ds_zero{stage}.json"
    path.write_text(json.dumps(config))
    return {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(path)}


def losses_after(run: Path, step: int) -> dict[int, float]:
    return {
        e["step"]: e["loss"] for e in read_metrics(run / "metrics.jsonl") if e["event"] == "train" and e["step"] > step
    }


def assert_invariants(summary: dict, distributed_type: str) -> None:
    assert summary["world_size"] == 2
    assert summary["distributed_type"] == distributed_type
    assert summary["step"] == 6
    assert summary["checks"] == {
        "weights_identical": True,
        "masks_identical": True,
        "zero_in_module": True,
        "zero_in_master": True,
        "at_target": True,
    }


def test_ddp_trains_with_invariants_and_resumes_exactly(tmp_path: Path) -> None:
    straight = launch(tmp_path, tiny_recipe(tmp_path, data={"batch_size": 2}), {})
    assert_invariants(straight, "MULTI_CPU")

    resumed_run = tmp_path / "resumed"
    (resumed_run / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "run" / "checkpoints" / "step_3", resumed_run / "checkpoints" / "step_3")
    recipe = tiny_recipe(tmp_path, data={"batch_size": 2}, run={"output_dir": str(resumed_run)})
    resumed = launch(tmp_path, recipe, {}, resume="latest")
    assert_invariants(resumed, "MULTI_CPU")
    assert losses_after(resumed_run, 3) == losses_after(tmp_path / "run", 3)
    assert sorted(losses_after(resumed_run, 3)) == [4, 5, 6]
    assert resumed["metrics"]["ensemble_loss"] == straight["metrics"]["ensemble_loss"]


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_trains_with_invariants(tmp_path: Path, stage: int) -> None:
    summary = launch(tmp_path, tiny_recipe(tmp_path, data={"batch_size": 2}), deepspeed_env(tmp_path, stage))
    assert_invariants(summary, "DEEPSPEED")
    assert summary["zero_stage"] == stage
    # The same model under every engine: no engine rewrites the config (ZeRO-3 included).
    assert not {"head_execution", "loss_reduction", "loss_chunk_size"} & set(summary["config_keys"])
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train = [e for e in metrics if e["event"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]


@pytest.mark.slow
def test_deepspeed_zero1_trains_with_invariants(tmp_path: Path) -> None:
    summary = launch(tmp_path, tiny_recipe(tmp_path, data={"batch_size": 2}), deepspeed_env(tmp_path, 1))
    assert_invariants(summary, "DEEPSPEED")
