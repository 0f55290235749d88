"""optim.precision: auto resolves by the hardware's native bf16, bf16-true trains the whole model in bf16, and the
run's record says which precision ran."""

import json
import logging
import os
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.state import AcceleratorState, GradientState
from helpers.dist import TESTS, torchrun_two
from helpers.training import tiny_recipe
from safetensors.torch import load_file

from nt_llm import precision as precision_module
from nt_llm.checkpoint import Checkpoint
from nt_llm.precision import PrecisionError, cpu_native_bf16, main_process_choice, resolve_precision
from nt_llm.train import RecipeError, recipe_from_dict, train
from nt_llm.train.metrics import read_metrics
from nt_llm.train.trainer import Trainer


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_native_bf16", lambda: None)


@pytest.fixture
def cpu_with_amx(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_native_bf16", lambda: "amx_bf16")


def test_auto_is_fp32_on_a_cpu_without_native_bf16(cpu_without_bf16: None) -> None:
    resolved = resolve_precision("auto", "cpu")
    assert (resolved.name, resolved.mixed_precision, resolved.weight_dtype) == ("no", "no", torch.float32)
    assert "no native bf16" in resolved.reason


def test_auto_is_bf16_autocast_on_a_cpu_with_native_bf16(cpu_with_amx: None) -> None:
    resolved = resolve_precision("auto", "cpu")
    assert (resolved.name, resolved.mixed_precision, resolved.weight_dtype) == ("bf16", "bf16", torch.float32)
    assert "amx_bf16" in resolved.reason


@pytest.mark.parametrize("speedup, expected", [(0.6, "no"), (1.2, "no"), (2.2, "bf16")])
def test_auto_on_a_cpu_with_avx512_bf16_but_no_amx_follows_the_probe(
    monkeypatch, speedup: float, expected: str
) -> None:
    # 0.6x and 2.2x: the two kinds measured (Intel VMs, an AMD EPYC Zen 4 VM); 1.2x: inside the margin.
    monkeypatch.setattr(precision_module, "cpu_native_bf16", lambda: "avx512_bf16")
    monkeypatch.setattr(precision_module, "bf16_matmul_speedup", lambda: speedup)
    resolved = resolve_precision("auto", "cpu")
    assert resolved.name == expected
    assert "no AMX" in resolved.reason and f"probe ran at {speedup:.1f}x fp32" in resolved.reason
    assert resolve_precision("bf16", "cpu").name == "bf16"  # asked for: runs, native


def test_the_bf16_probe_times_real_matmuls_once_per_process() -> None:
    precision_module.bf16_matmul_speedup.cache_clear()
    speedup = precision_module.bf16_matmul_speedup()
    assert speedup > 0 and precision_module.bf16_matmul_speedup() == speedup  # cached: one decision per process
    assert precision_module.bf16_matmul_speedup.cache_info().hits == 1


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "no")])
def test_auto_on_cuda_follows_the_devices_bf16_support(monkeypatch, supported: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    assert resolve_precision("auto", "cuda").name == expected


def test_explicit_bf16_on_a_cpu_without_it_runs_with_a_warning_naming_the_slowdown(cpu_without_bf16: None, caplog):
    with caplog.at_level(logging.WARNING, logger="nt_llm.precision"):
        resolved = resolve_precision("bf16", "cpu")
    assert resolved.name == "bf16"
    assert "20x slower than fp32" in caplog.text and "optim.precision=bf16" in caplog.text


def test_what_cannot_work_is_refused_by_name(monkeypatch) -> None:
    with pytest.raises(PrecisionError, match="DeepSpeed"):
        resolve_precision("bf16-true", "cpu", deepspeed=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(PrecisionError, match="does not support bf16"):
        resolve_precision("bf16-true", "cuda")
    with pytest.raises(PrecisionError, match="optim.precision"):
        resolve_precision("bf32", "cpu")


def test_a_recipe_names_an_unknown_precision() -> None:
    with pytest.raises(RecipeError, match="optim.precision"):
        recipe_from_dict({"optim": {"precision": "bfloat16"}})


def test_this_cpus_native_bf16_agrees_with_its_flags() -> None:
    """The capability torch reports is the one /proc/cpuinfo lists (where there is one)."""
    flags = precision_module._cpuinfo_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system to compare with")
    from_flags = next((name for name in ("amx_bf16", "avx512_bf16") if flags.get(name)), None)
    assert cpu_native_bf16() == from_flags


# Each direction once: a policy such as "bf16 if any process has it" would pass only one of them.
@pytest.mark.parametrize("native, expected", [("amx_bf16,none", "bf16"), ("none,amx_bf16", "no")])
def test_processes_that_would_resolve_auto_differently_all_follow_the_main_process(
    tmp_path: Path, native: str, expected: str
) -> None:
    recipe = tiny_recipe(tmp_path, data={"batch_size": 2}, optim={"precision": "auto", "max_steps": 2})
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun_two(TESTS / "dist" / "precision_worker.py", str(recipe_path), str(tmp_path), native, env=env, cwd=tmp_path)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks == [{"precision": expected, "mixed_precision": expected}] * 2
    start = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "start"]
    assert [e["precision"] for e in start] == [expected]


def test_a_single_process_keeps_its_own_choice(cpu_without_bf16: None) -> None:
    local = resolve_precision("auto", "cpu")
    assert main_process_choice(local) is local


def test_the_run_records_the_precision_that_ran(tmp_path: Path, cpu_without_bf16: None, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="nt_llm.train.trainer"):
        result = train(recipe_from_dict(tiny_recipe(tmp_path, optim={"precision": "auto", "max_steps": 2})))
    start = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "start"]
    assert [(e["step"], e["precision"]) for e in start] == [(0, "no")]
    assert "no native bf16" in start[0]["precision_reason"]
    assert "precision: no (auto: fp32" in caplog.text  # one info line
    assert result.checkpoint is not None


def test_bf16_true_trains_weights_and_adam_state_in_bf16(tmp_path: Path, cpu_with_amx: None) -> None:
    recipe = recipe_from_dict(tiny_recipe(tmp_path, optim={"precision": "bf16-true"}))
    trainer = Trainer(recipe)
    assert trainer.precision.mixed_precision == "no"  # no autocast: the weights themselves are bf16
    result = trainer.run(resume=None)
    losses = [e["loss"] for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "train"]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert {p.dtype for p in trainer.model.parameters()} == {torch.bfloat16}
    adam = list(trainer.optimizer.state_dict()["state"].values())
    assert adam and {s["exp_avg"].dtype for s in adam} == {torch.bfloat16}
    weights = load_file(result.checkpoint / "model" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.bfloat16}
    # DST's invariant holds in bf16 too: the masked-out weights are exactly zero.
    masks = Checkpoint.open(result.checkpoint).masks()
    assert masks and all(not weights[name][~mask].any() for name, mask in masks.items())
