"""The one launcher of the 2-process gloo tests: torchrun over a worker script under tests/dist/."""

import os
import socket
import subprocess
import sys
from pathlib import Path

TORCHRUN = Path(sys.executable).with_name("torchrun")
TESTS = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_two(
    worker: Path, *args: str, env: dict[str, str], cwd: Path | None = None, timeout: int = 240
) -> subprocess.CompletedProcess:
    """Run ``worker`` as 2 processes on this machine with ``env``; a failure shows the end of both output streams.

    The workers import ``helpers`` as the tests do: tests/ goes first on their PYTHONPATH."""
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))}
    command = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port"]
    command += [str(free_port()), str(worker), *args]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, f"{worker.name} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc
