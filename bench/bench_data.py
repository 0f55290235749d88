"""Data pipeline throughput vs what a NeuroTrails 130m training step consumes, measured in one run.

The pipeline must never be the bottleneck: it prints tokens/s delivered by the pipeline (pack and
pad modes, real-token fraction of each), tokens/s consumed by the model's training step
(forward + backward + AdamW) on the same batch shape, and their ratio. Example (needs `make data`):
    python bench/bench_data.py --seq-len 256 --batch-size 8 --batches 200 --steps 2
"""

from __future__ import annotations

import argparse
import logging
import time
from itertools import islice

import torch

from nt_llm.data import DataConfig, build_tokenizer, build_train_batches, real_token_fraction, vocab_size_of
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM

log = logging.getLogger("bench_data")


def pipeline_rate(cfg: DataConfig, tokenizer, batches: int) -> dict[str, float]:
    """Tokens/s of steady-state batches (after the first, which fills the shuffle buffer), real fraction."""
    train = build_train_batches(cfg, tokenizer)
    it = iter(train)
    start = time.perf_counter()
    next(it)
    first = time.perf_counter() - start
    fractions = []
    start = time.perf_counter()
    for batch in islice(it, batches):
        fractions.append(real_token_fraction(batch))
    seconds = time.perf_counter() - start
    tokens = len(fractions) * cfg.batch_size * cfg.seq_len
    return {"tokens_per_s": tokens / seconds, "first_batch_s": first, "real_fraction": sum(fractions) / len(fractions)}


def model_rate(vocab_size: int, batch_size: int, seq_len: int, steps: int) -> float:
    """Tokens/s of full training steps of the 130m NeuroTrails model (median step, after one warm-up)."""
    config = NeuroTrailsConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        ensemble_size=3,
        head_layers=8,
    )
    model = NeuroTrailsForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    input_ids = torch.randint(0, vocab_size, (batch_size, seq_len))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    median = sorted(times[1:])[len(times[1:]) // 2]
    return batch_size * seq_len / median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=200, help="pipeline batches timed per mode")
    parser.add_argument("--steps", type=int, default=2, help="model training steps timed (after one warm-up)")
    parser.add_argument("--shuffle-buffer", type=int, default=10_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("torch threads: %d", torch.get_num_threads())

    rates = {}
    for mode in ("pack", "pad"):
        cfg = DataConfig(
            source="embedded",
            data_dir=args.data_dir,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            mode=mode,
            shuffle_buffer=args.shuffle_buffer,
            prefetch=0,
        )  # the raw production rate
        tokenizer = build_tokenizer(cfg)
        rates[mode] = pipeline_rate(cfg, tokenizer, args.batches)
        r = rates[mode]
        log.info(
            "pipeline %-4s: %9.0f tokens/s (%7.0f real tokens/s), real-token fraction %.3f, "
            "first batch (buffer fill) %.2f s",
            mode,
            r["tokens_per_s"],
            r["tokens_per_s"] * r["real_fraction"],
            r["real_fraction"],
            r["first_batch_s"],
        )
    consumed = model_rate(vocab_size_of(tokenizer), args.batch_size, args.seq_len, args.steps)
    log.info(
        "model 130m NeuroTrails training step: %9.0f tokens/s (batch %d x %d)", consumed, args.batch_size, args.seq_len
    )
    for mode, r in rates.items():
        ratio = r["tokens_per_s"] / consumed
        log.info(
            "ratio pipeline/model (%s): %.0fx -> the pipeline takes %.4f%% of a step's time%s",
            mode,
            ratio,
            100 / ratio,
            "" if ratio > 1 else "  (BOTTLENECK)",
        )


if __name__ == "__main__":
    main()
