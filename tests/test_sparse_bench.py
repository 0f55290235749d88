"""bench/bench_dst.py runs end to end on a tiny config and reports consistent numbers (no timing targets)."""

import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_dst  # noqa: E402  (bench/ is a folder of scripts, not a package)

SIZE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "vocab_size": 256,
    "max_position_embeddings": 64,
}


def test_bench_dst_reports_hook_and_update_against_the_plain_step(tmp_path):
    size = tmp_path / "size.yaml"
    size.write_text(yaml.safe_dump(SIZE))
    threads = torch.get_num_threads()
    try:
        row = bench_dst.main(
            [
                "--size",
                str(size),
                "--head-layers",
                "2",
                "--batch",
                "2",
                "--seq-len",
                "16",
                "--steps",
                "2",
                "--updates",
                "1",
                "--threads",
                "1",
                "--device",
                "cpu",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert row["step"] > row["optimizer_step"] > 0
    assert row["hook"] > 0 and row["update"] > 0
    assert row["hook_ratio"] == pytest.approx(row["hook"] / row["step"])
    assert row["update_ratio"] == pytest.approx(row["update"] / row["step"])
    assert row["density"] == pytest.approx(0.9, abs=0.01)
    assert row["pruned"] == row["grown"] > 0
