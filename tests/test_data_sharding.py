"""Ranks read disjoint documents whose union is the stream: in one process, and for real with 2 gloo processes."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers.data import corpus, files_config, tiny_tokenizer
from helpers.dist import free_port

from nt_llm.data import TokenMeanLoss, build_document_stream, build_validation_set


def _epoch(cfg, rank: int, world_size: int) -> tuple[list[str], bool]:
    stream = build_document_stream(cfg, "train", rank, world_size)
    stream.repeat = False
    return list(stream), stream.shard_level


@pytest.mark.parametrize(
    ("n_files", "world_size", "shard_level"), [(4, 2, True), (5, 3, True), (1, 2, False), (2, 3, False)]
)
def test_ranks_are_disjoint_and_cover_the_stream(tmp_path, n_files: int, world_size: int, shard_level: bool) -> None:
    train, _ = corpus(tmp_path, n_files=n_files, docs_per_file=7)
    cfg = files_config(tmp_path, shuffle_buffer=4)
    per_rank = [_epoch(cfg, r, world_size) for r in range(world_size)]
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


def _worker(rank: int, world_size: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        cfg = files_config(Path(tmp), shuffle_buffer=5)
        tokenizer = tiny_tokenizer()
        docs, _ = _epoch(cfg, dist.get_rank(), dist.get_world_size())
        gathered: list[list[str]] = [[] for _ in range(world_size)]
        dist.all_gather_object(gathered, docs)

        val = build_validation_set(cfg, tokenizer, dist.get_rank(), dist.get_world_size())
        meter = TokenMeanLoss()
        real_tokens = 0
        for batch in val:
            # A stand-in loss per token (its token id) so the exact global mean is known in advance.
            targets = batch["labels"][:, 1:]
            valid = targets != -100
            mean = targets[valid].double().mean() if valid.any() else torch.tensor(float("nan"))
            meter.update(mean, batch["labels"])
            real_tokens += int(batch["attention_mask"].sum())
        counts = torch.tensor([len(val), real_tokens])
        all_counts = [torch.zeros_like(counts) for _ in range(world_size)]
        dist.all_gather(all_counts, counts)

        def reduce_sum(t: torch.Tensor) -> torch.Tensor:
            dist.all_reduce(t)
            return t

        mean_loss = meter.compute(reduce_sum)
        if rank == 0:
            Path(tmp, "result.json").write_text(
                json.dumps(
                    {
                        "world_size": dist.get_world_size(),
                        "docs": gathered,
                        "mean_loss": mean_loss,
                        "val_batches": [int(c[0]) for c in all_counts],
                        "val_tokens": sum(int(c[1]) for c in all_counts),
                    }
                )
            )
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_read_disjoint_documents_and_share_validation(tmp_path) -> None:
    train, _ = corpus(tmp_path, n_files=3, docs_per_file=6, n_val=30)
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
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
