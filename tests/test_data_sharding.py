"""Ranks read disjoint documents whose union is the stream: in one process, and for real with 2 gloo processes."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from helpers.data import corpus, epoch_documents, files_config, tiny_tokenizer
from helpers.dist import torchrun_two

from nt_llm.data import TokenMeanLoss, build_document_stream, build_validation_set

WORKER = Path(__file__).parent / "dist" / "sharding_worker.py"


@pytest.mark.parametrize(
    ("n_files", "world_size", "shard_level"), [(4, 2, True), (5, 3, True), (1, 2, False), (2, 3, False)]
)
def test_ranks_are_disjoint_and_cover_the_stream(tmp_path, n_files: int, world_size: int, shard_level: bool) -> None:
    train, _ = corpus(tmp_path, n_files=n_files, docs_per_file=7)
    cfg = files_config(tmp_path, shuffle_buffer=4)
    per_rank = [epoch_documents(cfg, r, world_size) for r in range(world_size)]
    assert all(level == shard_level for _, level in per_rank)
    seen = Counter(doc for docs, _ in per_rank for doc in docs)
    assert seen == Counter(doc for docs in train for doc in docs), "union is the stream, each document once"
    assert all(docs for docs, _ in per_rank), "every rank gets documents"


def test_shard_level_ranks_only_read_their_files(tmp_path) -> None:
    train, _ = corpus(tmp_path, n_files=6, docs_per_file=4)
    cfg = files_config(tmp_path, shuffle_buffer=3)
    stream = build_document_stream(cfg, "train", rank=1, world_size=3)
    mine = stream.shard_order(0)
    others = [i for i in range(6) if i not in mine]
    assert len(mine) == 2
    stream.repeat = False
    docs = set(stream)
    assert docs == {d for f in mine for d in train[f]}
    assert not docs & {d for f in others for d in train[f]}
    everyone = build_document_stream(cfg, "train")
    assert len({tuple(everyone.shard_order(e)) for e in range(5)}) > 1, "shard order is reshuffled per epoch"


# Slow (a launch of its own): in one process, test_ranks_are_disjoint_and_cover_the_stream above splits the stream and
# tests/test_data_validation.py the validation set between ranks; the DDP trainer test reads both for real.
@pytest.mark.slow
def test_two_gloo_processes_read_disjoint_documents_and_share_validation(tmp_path) -> None:
    train, _ = corpus(tmp_path, n_files=3, docs_per_file=6, n_val=30)
    torchrun_two(WORKER, str(tmp_path), env=dict(os.environ))
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2
    rank0, rank1 = (set(d) for d in result["docs"])
    assert rank0 and rank1 and not rank0 & rank1
    assert rank0 | rank1 == {d for docs in train for d in docs}
    assert result["val_batches"][0] == result["val_batches"][1], "same number of forward passes on every rank"
    assert result["val_tokens"] == 200, "the token budget, split across ranks"

    # The same budget in one process gives the same token-weighted mean.
    cfg = files_config(tmp_path)
    single = TokenMeanLoss()
    for batch in build_validation_set(cfg, tiny_tokenizer()):
        targets = batch["labels"][:, 1:]
        single.update_sum(targets[targets != -100].double().sum(), int((targets != -100).sum()))
    assert result["mean_loss"] == pytest.approx(single.compute())
