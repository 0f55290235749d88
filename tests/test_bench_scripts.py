"""The benchmark scripts run end to end on a tiny config and report consistent numbers (no timing targets)."""

import argparse
import math
from pathlib import Path

import pytest
import torch
import yaml
from helpers.bench import BENCH_SIZE, load_script

from nt_llm.flops import training_flops_per_token
from nt_llm.modeling.sizes import build_config

bench_inference = load_script("bench_inference")
bench_memory = load_script("bench_memory")
bench_train = load_script("bench_train")
bench_gpu = load_script("gpu")


@pytest.fixture
def size_file(tmp_path: Path) -> str:
    path = tmp_path / "size.yaml"
    path.write_text(yaml.safe_dump(BENCH_SIZE))
    return str(path)


def test_bench_train_reports_every_method_against_its_flop_ideal(size_file):
    rows = bench_train.main(["--size", size_file, "--batch", "2", "--seq", "16", "--steps", "2", "--threads", "1"])
    assert [(r["phase"], r["model"]) for r in rows] == [
        (phase, model) for phase in bench_train.METHODS for model in ("dense", phase)
    ]
    dense_flops = training_flops_per_token(build_config(size_file, "dense"), 16)
    for row in rows:
        assert row["wall"] > 0 and row["cpu"] >= 0
        if row["model"] == "dense":
            assert row["flop_ratio"] == 1 and row["wall_vs_ideal"] == 1
        else:
            config = build_config(size_file, row["model"], ensemble_size=3)
            assert row["flop_ratio"] == pytest.approx(training_flops_per_token(config, 16) / dense_flops)
            assert row["flop_ratio"] > 1 and math.isfinite(row["wall_vs_ideal"]) and row["wall_vs_ideal"] > 0


def test_bench_train_rejects_an_unknown_method(size_file):
    with pytest.raises(SystemExit):
        bench_train.main(["--size", size_file, "--methods", "dense_moe"])
    with pytest.raises(SystemExit):  # --compare bf16 sets the dtypes itself
        bench_train.main(["--size", size_file, "--compare", "bf16", "--dtype", "bfloat16"])


@pytest.mark.parametrize("compare,configs", [("bf16", ("fp32", "bf16")), ("compile", ("eager", "compiled"))])
def test_bench_train_compares_two_executions_of_each_method(size_file, compare, configs, monkeypatch):
    if compare == "compile":  # dynamo and AOT autograd without inductor's code generation: seconds
        compile_module = bench_train.NeuroTrailsForCausalLM.compile
        monkeypatch.setattr(
            bench_train.NeuroTrailsForCausalLM, "compile", lambda self: compile_module(self, backend="aot_eager")
        )
    args = ["--size", size_file, "--batch", "2", "--seq", "16", "--steps", "1", "--threads", "1"]
    rows = bench_train.main([*args, "--compare", compare, "--methods", "dense,neurotrails"])
    assert [(r["phase"], r["model"]) for r in rows] == [(m, c) for m in ("dense", "neurotrails") for c in configs]
    for reference, other in zip(rows[::2], rows[1::2], strict=True):
        assert reference["speedup_wall"] == 1 and reference["speedup_cpu"] == 1
        assert other["speedup_wall"] == pytest.approx(reference["wall"] / other["wall"])
        assert reference["tflops"] == pytest.approx(
            training_flops_per_token(build_config(size_file, reference["phase"]), 16) * 32 / reference["wall"] / 1e12
        )


def test_gpu_script_refuses_without_cuda_and_runs_its_smoke_form_on_cpu(size_file, capsys):
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as refused:
            bench_gpu.main(["--size", size_file])
        assert refused.value.code == 2 and "needs a CUDA device" in capsys.readouterr().err
    smoke = ["--device", "cpu", "--size", size_file, "--head-layers", "2", "--batch", "2", "--seq", "16"]
    smoke += ["--steps", "1", "--warmup", "1", "--prompt", "4", "--new-tokens", "2", "--compile-backend", "aot_eager"]
    result = bench_gpu.main(smoke)
    printed = capsys.readouterr().out
    steps = [(r.method, r.execution) for r in result["steps"]]
    assert steps == [(m, e) for e in bench_gpu.EXECUTIONS for m in bench_gpu.METHODS]
    assert result["mask_update_s"] > 0 and result["peak"] is None
    assert set(result["generation_ms_per_token"]) == {"dense", "neurotrails"}
    # The README table: a header, a rule and one row per (method, execution); dense is its own FLOP-ideal.
    rows = [line for line in printed.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | execution | step ms") and len(rows) == 2 + len(steps)
    assert rows[2].startswith("| dense | eager |") and rows[2].endswith("| - | 1.000 |")
    assert "mask update" in printed and "ms/token" in printed


def test_bench_inference_reports_all_three_models(size_file):
    result = bench_inference.main(
        [
            "--size",
            size_file,
            "--prompt",
            "4",
            "--new-tokens",
            "3",
            "--batch",
            "2",
            "--seq",
            "16",
            "--trials",
            "1",
            "--threads",
            "1",
        ]
    )
    assert set(result) == {"dense", "neurotrails", "full_ensemble"}
    assert all(r["latency_wall"] > 0 and r["forward_wall"] > 0 for r in result.values())
    # A shared backbone does less work per token than three whole models, a single model less than either.
    flops = {name: r["flops_per_token"] for name, r in result.items()}
    assert flops["dense"] < flops["neurotrails"] < flops["full_ensemble"]


@pytest.mark.parametrize(("loss", "chunk"), [("logits", 0), ("fused", 8)])
def test_bench_memory_child_runs_each_configuration_in_process(size_file, loss: str, chunk: int):
    # The fast form of the slow test below: the per-configuration step, without a fresh process (so no peak).
    args = argparse.Namespace(
        size=size_file,
        method="neurotrails",
        ensemble_size=2,
        vocab=512,
        seq=16,
        batch=2,
        loss=loss,
        chunk=chunk,
        threads=1,
        device="cpu",
    )
    result = bench_memory.child(args)
    assert result["heads"] == 2
    assert result["peak"] >= result["built"] > 0
    assert result["seconds"] > 0


@pytest.mark.slow  # three fresh processes: about a minute on a loaded 2-core machine
def test_bench_memory_shows_what_the_training_loss_saves(tmp_path):
    # Logits dominate this shape: 3 heads x 8 x 64 tokens x 32000 x 4 bytes = 196 MiB, chunks of 64 tokens 8 MiB.
    size = tmp_path / "size.yaml"
    size.write_text(yaml.safe_dump({**BENCH_SIZE, "vocab_size": 32000}))
    (row,) = bench_memory.main(
        ["--size", str(size), "--batches", "8", "--seq", "64", "--chunk", "64", "--threads", "1", "--device", "cpu"]
    )
    assert row["logits"] == 3 * 8 * 64 * 32000 * 4
    assert row["step_logits"] > row["logits"]  # the logits (and their gradient) are inside that step's peak
    assert row["step_logits"] - row["step_fused"] > 0.5 * row["logits"]  # one head's logits at a time, none kept
    # Chunks of 64 rows hold less again; how much is hidden here: a peak below the model build's high-water mark
    # (ru_maxrss) reads as 0.
    assert row["step_chunked"] <= row["step_fused"]
