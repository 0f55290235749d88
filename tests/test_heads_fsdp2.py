"""The heads' execution path works unchanged under FSDP2 (fully_shard per decoder block), with 2 real gloo processes:
each head's transformers modules unshard when they run, so nothing in the model knows how it is sharded."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).parent / "dist" / "heads_fsdp2_worker.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp2_step_matches_one_process(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    command = [
        str(TORCHRUN),
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(WORKER),
        str(summary_file),
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    summary = json.loads(summary_file.read_text())
    assert summary["world_size"] == 2
    assert summary["parameters"] > 0
    assert summary["max_grad_difference"] < 1e-5
