"""EOS trains although it is the pad id: no embedding row is frozen, and padding stays invisible."""

import pytest
import torch
from helpers.configs import TINY_GQA_FIELDS as TINY
from transformers import LlamaConfig, LlamaForCausalLM

from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM
from nt_llm.modeling.convert import llama_to_neurotrails

EOS = 2
SPECIAL = dict(bos_token_id=1, eos_token_id=EOS, pad_token_id=EOS)  # the embedded tokenizer's ids


def model_with_pad_as_eos(**overrides) -> NeuroTrailsForCausalLM:
    fields = {**TINY, **SPECIAL, "ensemble_size": 2, "head_layers": 2, **overrides}
    return NeuroTrailsForCausalLM(NeuroTrailsConfig(**fields))


def packed_batch() -> torch.Tensor:
    """Two packed rows of documents joined by EOS, as the trainer feeds them (labels = inputs, no padding)."""
    ids = torch.randint(3, TINY["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(0))
    ids[:, [3, 8]] = EOS
    return ids


def embeddings(model: NeuroTrailsForCausalLM) -> list[torch.nn.Embedding]:
    if model.config.share_embeddings:
        return [model.embed_tokens]
    return [head.embed_tokens for head in model.heads]


@pytest.mark.parametrize(
    "overrides", [{}, {"head_layers": 3, "share_embeddings": False}], ids=["shared_embedding", "full_ensemble"]
)
def test_eos_embedding_row_changes_after_one_training_step(overrides: dict) -> None:
    model = model_with_pad_as_eos(**overrides).train()
    before = [embedding.weight[EOS].detach().clone() for embedding in embeddings(model)]
    assert all(embedding.padding_idx is None for embedding in embeddings(model))
    assert all(row.abs().sum() > 0 for row in before), "the EOS row starts at zero, like a padding row"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = packed_batch()
    model(ids, labels=ids, return_logits=False).loss.backward()
    optimizer.step()
    for embedding, row in zip(embeddings(model), before, strict=True):
        assert embedding.weight.grad[EOS].abs().sum() > 0
        assert not torch.equal(embedding.weight[EOS], row)


def test_pad_as_eos_keeps_exact_parity_with_llama_logits() -> None:
    # LLaMA freezes its pad row (padding_idx) and NeuroTrails does not; the forward pass is the same either way.
    llama = LlamaForCausalLM(LlamaConfig(**TINY, **SPECIAL)).eval()
    assert llama.model.embed_tokens.padding_idx == EOS
    config = NeuroTrailsConfig(**TINY, **SPECIAL, ensemble_size=1, head_layers=1)
    model = NeuroTrailsForCausalLM(config).eval()
    state = llama.state_dict()
    state["model.embed_tokens.weight"][EOS] = torch.randn(TINY["hidden_size"])  # a trained EOS row, not LLaMA's zeros
    model.load_state_dict(llama_to_neurotrails(state, config), strict=True)
    llama.load_state_dict(state)
    ids = packed_batch()
    torch.testing.assert_close(model(ids, labels=ids).loss, llama(ids, labels=ids).loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model(ids).logits, llama(ids).logits, rtol=1e-5, atol=1e-6)


def test_left_padded_batch_with_eos_padding_generates_as_each_prompt_alone() -> None:
    # Padding with the (now trained, nonzero) EOS row must stay invisible behind the attention mask.
    model = model_with_pad_as_eos(initializer_range=0.5).eval()  # far from greedy ties
    long_prompt = torch.randint(3, TINY["vocab_size"], (1, 6), generator=torch.Generator().manual_seed(2))
    short_prompt = long_prompt[:, 3:]
    batch = torch.cat([long_prompt, torch.cat([torch.full((1, 3), EOS), short_prompt], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    # min_new_tokens: an EOS picked early would end one row and not the other, hiding what is compared.
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=EOS)
    together = model.generate(batch, attention_mask=mask, **kwargs)
    alone = [model.generate(p, attention_mask=torch.ones_like(p), **kwargs) for p in (long_prompt, short_prompt)]
    assert torch.equal(together[0, 6:], alone[0][0, 6:])
    assert torch.equal(together[1, 6:], alone[1][0, 3:])
    assert together[:, 6:].unique().numel() > 1, "degenerate generation proves nothing"
