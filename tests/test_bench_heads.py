"""bench/bench_heads.py runs end to end on a tiny size, and its baseline has the paper's layout (no timing targets)."""

from pathlib import Path

import pytest
import torch
import yaml
from helpers.bench import BENCH_SIZE, load_script

from nt_llm.modeling.sizes import build_config

bench_heads = load_script("bench_heads")


@pytest.fixture
def size_file(tmp_path: Path) -> str:
    path = tmp_path / "size.yaml"
    path.write_text(yaml.safe_dump(BENCH_SIZE))
    return str(path)


def test_bench_heads_reports_both_paths_in_both_precisions(size_file: str) -> None:
    argv = ["--size", size_file, "--head-layers", "2", "--batch", "2", "--seq", "16", "--steps", "1", "--threads", "1"]
    results = bench_heads.main(argv)
    assert set(results) == {"fp32", "bf16"}
    for result in results.values():
        assert all(result[path]["wall"] > 0 and result[path]["cpu"] >= 0 for path in bench_heads.PATHS)
        assert result["speedup"]["wall"] == pytest.approx(result["paper_loop"]["wall"] / result["nt_llm"]["wall"])


@pytest.mark.parametrize("method,backbone_blocks", [("neurotrails", 1), ("full_ensemble", None)])
def test_paper_loop_is_sliced_whole_models(size_file: str, method: str, backbone_blocks: int | None) -> None:
    config = build_config(size_file, method, ensemble_size=3, head_layers=2)
    paper = bench_heads.PaperLoop(config)
    if backbone_blocks is None:
        assert paper.backbone is None
    else:
        assert len(paper.backbone.model.layers) == backbone_blocks
    assert len(paper.heads) == 3
    assert all(len(head.model.layers) == config.head_layers for head in paper.heads)
    ids = torch.randint(0, BENCH_SIZE["vocab_size"], (2, 8))
    loss = paper(ids, ids)
    loss.backward()
    # Three heads' losses of a random init, each about log(vocab).
    assert loss.item() == pytest.approx(3 * torch.log(torch.tensor(256.0)).item(), rel=0.1)
    assert all(p.grad is not None for head in paper.heads for p in head.model.layers.parameters())
