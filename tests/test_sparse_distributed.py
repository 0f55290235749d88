"""DST invariants with 2 real gloo processes on CPU: DDP, DeepSpeed ZeRO-1/2/3 via accelerate, FSDP2.

Each case runs tests/dist/sparse_worker.py under torchrun; the worker asserts the invariants after
every optimizer step (zeros in module, fp32 master, optimizer state and checkpoint; exact counts;
masks identical across ranks; every update split over both ranks, each gathering full tensors for its own
tensors only, and equal to a single-process update from the same full weights, gradients and seed; RigL's
gradient is the global one) and rank 0 writes a summary.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from helpers.dist import torchrun_two

WORKER = Path(__file__).parent / "dist" / "sparse_worker.py"
RESUME_WORKER = Path(__file__).parent / "dist" / "sparse_resume_worker.py"


def _launch(worker: Path, engine: str, *args: str) -> None:
    env = dict(os.environ)
    env.pop("ACCELERATE_USE_CPU", None)
    if engine == "ddp":
        # without it accelerate under torchrun on CPU leaves the model unwrapped (no MULTI_CPU): the two
        # processes would train unsynchronised, silently
        env["ACCELERATE_USE_CPU"] = "1"
    torchrun_two(worker, engine, *args, env=env)


def _run(engine: str, out: Path) -> dict:
    _launch(WORKER, engine, str(out))
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def summaries(tmp_path_factory) -> dict:
    """Worker results by engine, so the cross-engine comparison reuses the runs."""
    return {}


def _summary(summaries: dict, engine: str, tmp_path_factory) -> dict:
    if engine not in summaries:
        summaries[engine] = _run(engine, tmp_path_factory.mktemp(engine))
    return summaries[engine]


def _check_summary(summary: dict, engine: str) -> None:
    assert summary["engine"] == engine
    assert summary["world_size"] == 2
    assert summary["steps"] == 8
    assert [u["step"] for u in summary["updates"]] == [2, 4, 6, 8]
    assert all(u["pruned"] == u["grown"] > 0 for u in summary["updates"])
    assert summary["rigl_grads_checked"] == ["blocks.0.weight", "blocks.1.weight", "head.weight"]
    # every update was split over both ranks and matched a single-process update exactly
    assert summary["single_process_checked"] == [2, 4, 6, 8]
    assert abs(summary["density"] - 0.4) < 0.01


@pytest.mark.parametrize(
    "engine",
    [
        "ddp",
        "zero2",
        "zero3",
        pytest.param("zero1", marks=pytest.mark.slow),  # same code path as zero2
        pytest.param("zero3_persistent", marks=pytest.mark.slow),  # zero3 plus whole small weights
        pytest.param("zero2_bf16", marks=pytest.mark.slow),  # bf16 keeps whole-tensor grad buffers
        pytest.param("zero3_bf16", marks=pytest.mark.slow),
    ],
)
def test_two_process_invariants(engine, summaries, tmp_path_factory):
    summary = _summary(summaries, engine, tmp_path_factory)
    _check_summary(summary, engine)
    assert summary["checked_checkpoint"] is True


def test_two_process_fsdp2(summaries, tmp_path_factory):
    _check_summary(_summary(summaries, "fsdp2", tmp_path_factory), "fsdp2")


def test_engines_agree_on_topology(summaries, tmp_path_factory):
    """Every engine sees the same data and global gradients: the final topology must match."""
    engines = ("ddp", "zero2", "zero3", "fsdp2")
    results = {e: _summary(summaries, e, tmp_path_factory) for e in engines}
    for engine in engines[1:]:
        assert results[engine]["updates"] == results["ddp"]["updates"], engine
        assert results[engine]["active"] == results["ddp"]["active"], engine


# Two launches each (about 25-40 s): slow; tests/test_sparse_dst.py resumes in one process by default.
@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "zero2", "zero3"])
def test_save_load_continue_matches_straight_run(engine, tmp_path):
    """accelerate save_state mid-run (DST registered), fresh processes load_state and continue."""
    _launch(RESUME_WORKER, engine, str(tmp_path), "straight")
    _launch(RESUME_WORKER, engine, str(tmp_path), "resume")
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert straight["last_update"] == resumed["last_update"] == 8  # an update happened after the resume
    assert straight["masks"].keys() == resumed["masks"].keys()
    for name, mask in straight["masks"].items():
        assert torch.equal(mask, resumed["masks"][name]), name
    for name, weight in straight["weights"].items():
        assert torch.equal(weight, resumed["weights"][name]), name
