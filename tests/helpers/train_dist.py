"""The real trainer in 2 gloo processes (tests/dist/train_worker.py under torchrun) and the launch environments of
the engines: DeepSpeed ZeRO, and FSDP2 as the shipped accelerate config sets it."""

import json
import os
from pathlib import Path

import yaml
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_multi_gpu_env

from helpers.dist import torchrun_two
from nt_llm.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "dist" / "train_worker.py"
FSDP2_CONFIG = REPO / "recipes" / "accelerate" / "fsdp2.yaml"


def launch_trainer(tmp_path: Path, recipe: dict, env_extra: dict[str, str], resume: str | None = None) -> dict:
    """Train ``recipe`` with 2 processes; returns rank 0's summary of the live objects after training."""
    recipe_path = tmp_path / f"recipe-{len(list(tmp_path.glob('recipe-*')))}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    summary = recipe_path.with_suffix(".json")
    env = {
        **os.environ,
        **env_extra,
        "OMP_NUM_THREADS": "1",
        # DeepSpeed's CPU communication op is compiled once (about 30 s) and reused from here.
        "TORCH_EXTENSIONS_DIR": os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions")
        ),
    }
    env.pop("ACCELERATE_USE_CPU", None)  # DeepSpeed refuses it; the trainer picks gloo (and cpu) on the CPU itself
    args = [str(recipe_path), str(summary)] + (["--resume", resume] if resume else [])
    torchrun_two(WORKER, *args, env=env, cwd=tmp_path, timeout=600)
    return json.loads(summary.read_text())


def assert_invariants(summary: dict, distributed_type: str) -> None:
    """The worker's checks of a 6-step tiny run on 2 ranks under ``distributed_type`` (accelerate's name)."""
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


def assert_deepspeed_run(summary: dict, run: Path, stage: int) -> None:
    """A 6-step tiny run in ``run`` under DeepSpeed ZeRO-``stage``: the invariants, the model's config untouched by
    the engine, and a loss that went down."""
    assert_invariants(summary, "DEEPSPEED")
    assert summary["zero_stage"] == stage
    # The same model under every engine: no engine rewrites the config (ZeRO-3 included).
    assert not {"head_execution", "loss_reduction", "loss_chunk_size"} & set(summary["config_keys"])
    train = [e for e in read_metrics(run / "metrics.jsonl") if e["event"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]


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


def accelerate_config_env(config: Path = FSDP2_CONFIG) -> dict[str, str]:
    """What ``accelerate launch --config_file CONFIG`` puts in its processes' environment (ACCELERATE_*, FSDP_*),
    computed by accelerate's own launch code: a test launched with it runs the shipped config."""
    args = launch_command_parser().parse_args(["--config_file", str(config), "--num_processes", "2", str(WORKER)])
    args, _, _ = _validate_launch_command(args)
    launched = prepare_multi_gpu_env(args)
    return {key: value for key, value in launched.items() if key.startswith(("ACCELERATE_", "FSDP_"))}
