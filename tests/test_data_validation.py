"""The validation set holds a fixed token budget, identical across runs and world sizes; the mean is per token."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from helpers.data import corpus, files_config, tiny_tokenizer

from nt_llm.data import TokenMeanLoss, build_validation_set, count_predicted_tokens


def _rows(val) -> list[tuple[list[int], list[int]]]:
    return [
        (ids.tolist(), mask.tolist())
        for b in val
        for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True)
    ]


@pytest.mark.parametrize("mode", ["pack", "pad"])
def test_budget_is_exact_and_identical_across_runs_and_world_sizes(tmp_path, mode: str) -> None:
    corpus(tmp_path, n_files=1, docs_per_file=3, n_val=60)
    cfg = files_config(tmp_path, mode=mode, validation_tokens=333, validation_batch_size=3, seq_len=16)
    tok = tiny_tokenizer()
    single = _rows(build_validation_set(cfg, tok))
    assert single == _rows(build_validation_set(cfg, tok)), "identical across runs"
    assert sum(sum(mask) for _, mask in single) == 333

    halves = [build_validation_set(cfg, tok, rank=r, world_size=2) for r in range(2)]
    assert len(halves[0]) == len(halves[1]), "every rank runs the same number of batches"
    real = [row for half in halves for row in _rows(half) if sum(row[1])]
    assert sorted(real) == sorted(row for row in single if sum(row[1]))


def test_budget_larger_than_the_split_uses_all_of_it_and_says_so(tmp_path, caplog) -> None:
    _, val = corpus(tmp_path, n_files=1, docs_per_file=3, n_val=5)
    cfg = files_config(tmp_path, validation_tokens=10**6)
    tok = tiny_tokenizer()
    with caplog.at_level(logging.WARNING, logger="nt_llm.data.validation"):
        vs = build_validation_set(cfg, tok)
    expected = sum(len(tok(d)["input_ids"]) + 1 for d in val)
    assert vs.num_tokens == expected
    assert "fewer than the budget" in caplog.text


def test_token_mean_loss_is_the_mean_over_all_tokens_not_over_batches() -> None:
    torch.manual_seed(0)
    vocab = 11
    meter = TokenMeanLoss()
    all_logits, all_labels, batch_means = [], [], []
    for n_real in (16, 3, 9, 0):  # uneven real lengths; the last batch is filler only
        logits = torch.randn(2, 16, vocab)
        labels = torch.randint(0, vocab, (2, 16))
        labels[:, n_real:] = -100
        # The causal-LM loss as transformers computes it: predict position t+1 from t.
        mean = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=-100)
        meter.update(mean, labels)
        all_logits.append(logits[:, :-1].reshape(-1, vocab))
        all_labels.append(labels[:, 1:].reshape(-1))
        if count_predicted_tokens(labels):
            batch_means.append(float(mean))
        else:
            assert math.isnan(float(mean)), "an empty batch's mean is NaN and must not poison the total"
    reference = F.cross_entropy(torch.cat(all_logits), torch.cat(all_labels), ignore_index=-100).item()
    assert meter.compute() == pytest.approx(reference, rel=1e-6)
    assert abs(sum(batch_means) / len(batch_means) - reference) > 1e-3, "a mean of batch means would differ"
    assert meter.tokens == 2 * (15 + 2 + 8)


def test_token_mean_loss_without_tokens_is_an_error() -> None:
    with pytest.raises(ValueError, match="no predicted tokens"):
        TokenMeanLoss().compute()
