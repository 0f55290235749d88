"""Two gloo processes read one files stream (tests/test_data_sharding.py): each rank's documents of one epoch, the
validation batches and tokens each rank evaluates, and the token-weighted mean of a stand-in loss over them.
Rank 0 writes DIR/result.json.

    torchrun --nproc_per_node 2 tests/dist/sharding_worker.py DIR
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from helpers.data import epoch_documents, files_config, tiny_tokenizer

from nt_llm.data import TokenMeanLoss, build_validation_set


def main(folder: Path) -> None:
    dist.init_process_group("gloo")
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        cfg = files_config(folder, shuffle_buffer=5)
        docs, _ = epoch_documents(cfg, rank, world_size)
        gathered: list[list[str]] = [[] for _ in range(world_size)]
        dist.all_gather_object(gathered, docs)

        val = build_validation_set(cfg, tiny_tokenizer(), rank, world_size)
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
            result = {
                "world_size": world_size,
                "docs": gathered,
                "mean_loss": mean_loss,
                "val_batches": [int(c[0]) for c in all_counts],
                "val_tokens": sum(int(c[1]) for c in all_counts),
            }
            (folder / "result.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
