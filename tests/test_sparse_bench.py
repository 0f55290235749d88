"""bench/bench_dst.py runs end to end on a tiny config and reports consistent numbers (no timing targets),
the split update over 1 and 2 spawned gloo processes included."""

import pytest
import torch
import yaml
from helpers.bench import BENCH_SIZE, load_script

bench_dst = load_script("bench_dst")


def _run(tmp_path, world_sizes: str, rounds: int = 1) -> dict:
    size = tmp_path / "size.yaml"
    size.write_text(yaml.safe_dump(BENCH_SIZE))
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
                "--paper-batch",
                "64",
                "--world-sizes",
                world_sizes,
                "--rounds",
                str(rounds),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    return row


def test_bench_dst_reports_hook_and_update_against_the_step(tmp_path):
    row = _run(tmp_path, "1")  # one spawned gloo rank: the split-update path, quickly
    assert row["step"] > row["optimizer_step"] > 0
    assert row["hook"] > 0 and row["update"] > 0
    assert row["hook_ratio"] == pytest.approx(row["hook"] / row["step"])
    assert row["update_ratio"] == pytest.approx(row["update"] / row["step"])
    assert row["density"] == pytest.approx(0.9, abs=0.01)
    assert row["pruned"] == row["grown"] > 0
    # the paper-batch step is scaled from the micro-batch: forward/backward x 32, one AdamW step
    fb = row["step"] - row["optimizer_step"]
    assert row["paper_step"] == pytest.approx(fb * 32 + row["optimizer_step"])
    assert row["update_paper_ratio"] == pytest.approx(row["update"] / row["paper_step"])
    assert row["hook_paper_ratio"] == pytest.approx(row["hook"] / row["paper_step"])
    assert set(row["world_update"]) == {1} and row["world_update"][1] > 0 and row["world_update_cpu"][1] > 0


@pytest.mark.slow  # six more interpreters (about 60 s on the shared 2 cores)
def test_bench_dst_compares_the_split_update_over_one_and_two_ranks(tmp_path):
    row = _run(tmp_path, "1,2", rounds=2)
    assert set(row["world_update"]) == {1, 2} and all(t > 0 for t in row["world_update"].values())
    assert row["world_ratio_2"] == pytest.approx(row["world_update"][2] / row["world_update"][1])
    assert row["world_cpu_ratio_2"] == pytest.approx(row["world_update_cpu"][2] / row["world_update_cpu"][1])


def test_bench_dst_rejects_bad_world_sizes():
    with pytest.raises(SystemExit):
        bench_dst.parse_args(["--world-sizes", "1,x"])
    with pytest.raises(SystemExit):
        bench_dst.parse_args(["--world-sizes", "0"])
    with pytest.raises(SystemExit):
        bench_dst.parse_args(["--rounds", "0"])
