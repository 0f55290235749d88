"""DST invariants with 2 real gloo processes on CPU: DDP, DeepSpeed ZeRO-1/2/3 via accelerate, FSDP2.

Each case runs tests/dist/sparse_worker.py under torchrun; the worker asserts the invariants after
every optimizer step (zeros in module, fp32 master, optimizer state and checkpoint; exact counts;
masks identical across ranks; RigL's gradient is the global one) and rank 0 writes a summary.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).parent / "dist" / "sparse_worker.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(engine: str, out: Path) -> dict:
    env = dict(os.environ)
    env.pop("ACCELERATE_USE_CPU", None)
    if engine == "ddp":
        # without it accelerate under torchrun on CPU does not set up MULTI_CPU (see ENVIRONMENT.md)
        env["ACCELERATE_USE_CPU"] = "1"
    cmd = [
        str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(WORKER), engine, str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{engine} worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
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
    assert abs(summary["density"] - 0.4) < 0.01


@pytest.mark.parametrize(
    "engine",
    [
        "ddp",
        "zero2",
        "zero3",
        pytest.param("zero1", marks=pytest.mark.slow),  # same code path as zero2
        pytest.param("zero3_persistent", marks=pytest.mark.slow),  # zero3 plus whole small weights
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
