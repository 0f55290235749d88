"""The trainer under FSDP2 with DST, 2 real gloo processes on the CPU, launched with the environment the shipped
accelerate config (recipes/accelerate/fsdp2.yaml) gives its processes: accelerate's own FSDP2 path (fully_shard per
decoder block, sharded checkpoints), the one a GPU run with that config takes (nt_llm.train.fsdp says why the CPU
needs the trainer's one step into it)."""

import json
import shutil
from pathlib import Path

import torch
from helpers.train_dist import accelerate_config_env, launch_trainer
from helpers.training import tiny_recipe
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from nt_llm.checkpoint import Checkpoint
from nt_llm.train.metrics import read_metrics


def train_losses(run: Path, after: int = 0) -> dict[int, float]:
    events = read_metrics(run / "metrics.jsonl")
    return {e["step"]: e["loss"] for e in events if e["event"] == "train" and e["step"] > after}


def assert_fsdp2_with_dst(summary: dict) -> None:
    assert summary["world_size"] == 2
    assert (summary["distributed_type"], summary["fsdp_version"], summary["dst_engine"]) == ("FSDP", 2, "FSDP2Engine")
    assert summary["sharded_parameters"] == summary["parameters"] > 0  # every weight a DTensor shard
    assert summary["step"] == 6
    assert summary["checks"] == {
        "weights_identical": True,  # gathered full weights
        "masks_identical": True,
        "zero_in_module": True,
        "zero_in_master": True,  # (DeepSpeed only: FSDP2 has no separate master copy)
        "at_target": True,
    }


def test_fsdp2_config_trains_with_dst_saves_and_resumes_exactly(tmp_path: Path) -> None:
    env = accelerate_config_env()
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "LlamaDecoderLayer"
    # 6 steps of 2 micro-batches (accumulation without gradient sync between them), mask updates at 2, 4, 6.
    recipe = tiny_recipe(tmp_path, data={"batch_size": 2}, optim={"precision": "no"})
    straight = launch_trainer(tmp_path, recipe, env)
    assert_fsdp2_with_dst(straight)
    run = tmp_path / "run"
    assert [e["step"] for e in read_metrics(run / "metrics.jsonl") if e["event"] == "dst"] == [2, 4, 6]

    # The checkpoint: accelerate's sharded engine state, and a standalone model folder of the gathered weights in
    # which every masked weight is exactly zero.
    checkpoint = Checkpoint.open(run / "checkpoints" / "step_6")
    assert (checkpoint.state_dir / "pytorch_model_fsdp_0").is_dir()
    assert (checkpoint.state_dir / "optimizer_0").is_dir()
    config = json.loads((checkpoint.model_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_neurotrails.NeuroTrailsForCausalLM"
    assert not list(checkpoint.model_dir.glob("_fsdp*.py"))  # not torch's FSDP wrapper class's files
    weights = load_file(checkpoint.model_dir / "model.safetensors")
    for name, mask in checkpoint.masks().items():
        assert not weights[name][~mask].any(), name
    model = AutoModelForCausalLM.from_pretrained(checkpoint.model_dir, trust_remote_code=True)
    assert torch.isfinite(model(torch.tensor([[1, 5, 9]])).logits).all()

    # Resume step 3 in a fresh folder: the same losses as running straight through (an update at 4 after it).
    resumed_run = tmp_path / "resumed"
    (resumed_run / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / "step_3", resumed_run / "checkpoints" / "step_3")
    recipe["run"]["output_dir"] = str(resumed_run)
    resumed = launch_trainer(tmp_path, recipe, env, resume="latest")
    assert_fsdp2_with_dst(resumed)
    assert sorted(train_losses(resumed_run, 3)) == [4, 5, 6]
    assert train_losses(resumed_run, 3) == train_losses(run, 3)
    assert resumed["metrics"]["ensemble_loss"] == straight["metrics"]["ensemble_loss"]
