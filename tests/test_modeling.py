"""The NeuroTrails model: parity with LLaMA (whole model and every head), head averaging, caching, configs."""

import pytest
import torch
import torch.nn.functional as F
from helpers.configs import TINY_GQA_FIELDS
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM
from nt_llm.modeling.convert import head_to_llama, llama_names, llama_to_neurotrails
from nt_llm.modeling.modeling_neurotrails import IGNORE_INDEX, linear_cross_entropy
from nt_llm.modeling.sizes import available_sizes, build_config, load_size

TINY = TINY_GQA_FIELDS


def tiny_model(**overrides) -> NeuroTrailsForCausalLM:
    fields = {**TINY, "ensemble_size": 3, "head_layers": 2, **overrides}
    return NeuroTrailsForCausalLM(NeuroTrailsConfig(**fields)).eval()


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two sequences, the second right-padded by 3, with -100 labels on the padding."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, TINY["vocab_size"], (2, 10), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -3:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return input_ids, attention_mask, labels


@pytest.mark.parametrize("head_layers", [1, 2, 3])
def test_single_head_reproduces_llama(head_layers: int) -> None:
    llama = LlamaForCausalLM(LlamaConfig(**TINY)).eval()
    config = NeuroTrailsConfig(**TINY, ensemble_size=1, head_layers=head_layers)
    model = NeuroTrailsForCausalLM(config).eval()
    model.load_state_dict(llama_to_neurotrails(llama.state_dict(), config), strict=True)
    input_ids, attention_mask, labels = padded_batch()

    expected = llama(input_ids, attention_mask=attention_mask, labels=labels)
    got = model(input_ids, attention_mask=attention_mask, labels=labels)

    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.loss, expected.loss, rtol=1e-6, atol=1e-6)


def test_head_exported_as_llama_gives_that_heads_logits() -> None:
    model = tiny_model()
    input_ids, attention_mask, _ = padded_batch()
    head_logits = model(input_ids, attention_mask=attention_mask, output_head_logits=True).head_logits
    for head in range(model.config.ensemble_size):
        llama = LlamaForCausalLM(LlamaConfig(**TINY)).eval()
        llama.load_state_dict(head_to_llama(model.state_dict(), model.config, head), strict=True)
        torch.testing.assert_close(llama(input_ids, attention_mask=attention_mask).logits, head_logits[head])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_logits_are_head_mean_and_loss_combines_head_losses(reduction: str) -> None:
    model = tiny_model()
    input_ids, attention_mask, labels = padded_batch()
    out = model(
        input_ids, attention_mask=attention_mask, labels=labels, output_head_logits=True, loss_reduction=reduction
    )

    assert out.head_logits.shape == (3, 2, 10, TINY["vocab_size"])
    torch.testing.assert_close(out.logits, out.head_logits.mean(dim=0))
    by_hand = torch.stack(
        [
            F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
            for logits in out.head_logits
        ]
    )
    torch.testing.assert_close(out.head_losses, by_hand)
    torch.testing.assert_close(out.loss, by_hand.sum() if reduction == "sum" else by_hand.mean())
    assert len(set(by_hand.tolist())) == 3, "heads were initialised identically"


LLAMA_FIELDS = ("num_key_value_heads", "attention_bias", "mlp_bias")


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # TreeNet / NeuroTrails
        {"head_layers": 3, "share_embeddings": False},  # full ensemble
        {"num_key_value_heads": 4, "attention_bias": True, "mlp_bias": True},
    ],
    ids=["treenet", "full_ensemble", "mha_with_biases"],
)
def test_every_head_matches_its_llama_in_values_and_gradients(overrides: dict) -> None:
    # The reference for the heads' execution: each path through the model run as transformers' LlamaForCausalLM.
    model = tiny_model(**overrides).train()
    input_ids, attention_mask, labels = padded_batch()
    out = model(input_ids, attention_mask=attention_mask, labels=labels, output_head_logits=True)
    out.loss.backward()

    expected: dict[str, torch.Tensor] = {}
    llama_config = LlamaConfig(**{**TINY, **{k: v for k, v in overrides.items() if k in LLAMA_FIELDS}})
    for head in range(model.config.ensemble_size):
        llama = LlamaForCausalLM(llama_config).train()
        llama.load_state_dict(head_to_llama(model.state_dict(), model.config, head), strict=True)
        reference = llama(input_ids, attention_mask=attention_mask, labels=labels)
        torch.testing.assert_close(out.head_logits[head], reference.logits)
        torch.testing.assert_close(out.head_losses[head], reference.loss)
        reference.loss.backward()
        for llama_name, name in llama_names(model.config, head).items():
            grad = llama.get_parameter(llama_name).grad
            expected[name] = expected[name] + grad if name in expected else grad  # shared parts: heads' sum
    named = dict(model.named_parameters())
    assert set(expected) == set(named)
    for name, p in named.items():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


class LogitRows(TorchDispatchMode):
    """Records the most rows any op's new ``[..., vocab]`` tensor had (the logits that exist at once; views such
    as a transposed ``[hidden, vocab]`` weight are not new tensors)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.most = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.shape[-1:] == (self.vocab,):
                self.most = max(self.most, t.numel() // self.vocab)
        return out


@pytest.mark.parametrize("chunk", [0, 5, 64])
def test_training_loss_matches_the_logits_loss_and_gradients_without_keeping_logits(chunk: int) -> None:
    whole = tiny_model().train()
    fused = tiny_model().train()
    fused.load_state_dict(whole.state_dict())
    input_ids, attention_mask, labels = padded_batch()
    expected = whole(input_ids, attention_mask=attention_mask, labels=labels)  # transformers' loss over logits
    rows = LogitRows(TINY["vocab_size"])
    with rows:
        got = fused(input_ids, attention_mask=attention_mask, labels=labels, return_logits=False, loss_chunk_size=chunk)
    assert got.logits is None
    assert rows.most == min(chunk or input_ids.numel(), input_ids.numel())  # one chunk of one head's logits at a time
    torch.testing.assert_close(got.head_losses, expected.head_losses)
    expected.loss.backward()
    (2.5 * got.loss).backward()  # backward scales the gradients computed in the forward
    for (name, p), q in zip(whole.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, 2.5 * p.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_linear_cross_entropy_is_cross_entropy_with_ignored_rows_and_partial_gradients() -> None:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(11, 8, generator=generator, requires_grad=True)
    weight = torch.randn(13, 8, generator=generator, requires_grad=True)
    target = torch.randint(0, 13, (11,), generator=generator)
    target[[2, 7]] = IGNORE_INDEX
    expected = F.cross_entropy(hidden @ weight.t(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    expected.backward()
    for chunk in (0, 3, 11, 40):
        h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
        got = linear_cross_entropy(h, w, target, chunk)
        got.backward()
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(h.grad, hidden.grad)
        torch.testing.assert_close(w.grad, weight.grad)
    frozen = linear_cross_entropy(hidden.detach(), weight.detach().requires_grad_(), target, 4)
    frozen.backward()  # no gradient for an input that does not want one
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, target, 4), expected)


def test_training_loss_under_bf16_autocast_matches_the_logits_loss() -> None:
    whole = tiny_model().train()
    fused = tiny_model().train()
    fused.load_state_dict(whole.state_dict())
    input_ids, attention_mask, labels = padded_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = whole(input_ids, attention_mask=attention_mask, labels=labels)
        got = fused(input_ids, attention_mask=attention_mask, labels=labels, return_logits=False, loss_chunk_size=7)
    torch.testing.assert_close(got.head_losses, expected.head_losses, rtol=2e-2, atol=2e-2)
    expected.loss.backward()
    got.loss.backward()
    for p, q in zip(whole.parameters(), fused.parameters(), strict=True):
        assert q.grad.dtype == p.dtype == torch.float32
        torch.testing.assert_close(q.grad, p.grad, rtol=5e-2, atol=5e-3)


def test_training_loss_divides_by_num_items_in_batch_as_transformers_does() -> None:
    model = tiny_model().train()
    input_ids, attention_mask, labels = padded_batch()
    expected = model(input_ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=40)
    got = model(input_ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=40, return_logits=False)
    torch.testing.assert_close(got.head_losses, expected.head_losses)


def test_activation_checkpointing_leaves_gradients_unchanged() -> None:
    plain = tiny_model().train()
    checkpointed = tiny_model().train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.activation_checkpointing_enable()
    calls = []
    for block in checkpointed.modules():
        if isinstance(block, LlamaDecoderLayer):
            real = block._gradient_checkpointing_func
            block._gradient_checkpointing_func = lambda *a, real=real, **k: calls.append(1) or real(*a, **k)
    input_ids, attention_mask, labels = padded_batch()
    for m in (plain, checkpointed):
        m(input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    assert len(calls) == checkpointed.config.num_cache_layers  # every block: the backbone's and each head's
    for p, q in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def peaked_model(**overrides) -> NeuroTrailsForCausalLM:
    # A large init makes greedy choices far from ties, so cache/no-cache differences cannot hide in noise.
    return tiny_model(initializer_range=0.5, **overrides)


SHAPES = pytest.mark.parametrize(
    "overrides",
    [{}, {"head_layers": 3, "share_embeddings": False}, {"ensemble_size": 1}],
    ids=["treenet", "full_ensemble", "dense"],
)


@SHAPES
def test_cached_forward_gives_the_full_forwards_logits(overrides: dict) -> None:
    model = tiny_model(**overrides)
    input_ids, _, _ = padded_batch()
    full = model(input_ids, use_cache=False, output_head_logits=True)
    prefix = model(input_ids[:, :6], use_cache=True)
    assert len(prefix.cache.layers) == model.config.num_cache_layers  # each head's blocks own their slots
    assert prefix.cache.get_seq_length() == 6
    step = model(input_ids[:, 6:], cache=prefix.cache, output_head_logits=True)
    torch.testing.assert_close(step.head_logits, full.head_logits[:, :, 6:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step.logits, full.logits[:, 6:], rtol=1e-5, atol=1e-5)


def test_a_cache_built_from_the_config_gets_the_heads_slots_and_a_filled_short_one_is_refused() -> None:
    model = tiny_model()
    prompt = torch.randint(0, TINY["vocab_size"], (1, 4), generator=torch.Generator().manual_seed(4))
    cache = DynamicCache(config=model.config)  # what generate() builds: num_hidden_layers layers
    assert len(cache.layers) == model.config.num_hidden_layers < model.config.num_cache_layers
    model(prompt, cache=cache)
    assert len(cache.layers) == model.config.num_cache_layers
    short = DynamicCache(config=LlamaConfig(**TINY))
    short.update(torch.zeros(1, 2, 4, 8), torch.zeros(1, 2, 4, 8), layer_idx=0)
    with pytest.raises(ValueError, match="layers"):
        model(prompt, cache=short)


@SHAPES
def test_generate_with_cache_matches_without(overrides: dict) -> None:
    model = peaked_model(**overrides)
    prompt = torch.randint(0, TINY["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(1))
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(prompt))
    cached = model.generate(prompt, use_cache=True, return_dict_in_generate=True, **kwargs)
    uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert len(cached.cache.layers) == model.config.num_cache_layers
    assert cached.sequences.shape == (2, 13)
    assert torch.equal(cached.sequences, uncached)
    assert uncached[:, 5:].unique().numel() > 1, "degenerate generation proves nothing"


def test_static_cache_generation_matches_without() -> None:
    # A StaticCache built by generate() gets the heads' slots the same way (copies of its empty last layer).
    model = peaked_model()
    prompt = torch.randint(0, TINY["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(1))
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(prompt))
    static = model.generate(prompt, cache_implementation="static", **kwargs)
    assert torch.equal(static, model.generate(prompt, use_cache=False, **kwargs))


def test_left_padded_batch_generates_as_each_prompt_alone() -> None:
    model = peaked_model()
    long_prompt = torch.randint(0, TINY["vocab_size"], (1, 6), generator=torch.Generator().manual_seed(2))
    short_prompt = long_prompt[:, 2:]
    batch = torch.cat([long_prompt, torch.cat([torch.zeros(1, 2, dtype=torch.long), short_prompt], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :2] = 0
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    together = model.generate(batch, attention_mask=mask, **kwargs)
    alone = [model.generate(p, attention_mask=torch.ones_like(p), **kwargs) for p in (long_prompt, short_prompt)]
    assert torch.equal(together[0, 6:], alone[0][0, 6:])
    assert torch.equal(together[1, 6:], alone[1][0, 4:])


@SHAPES
def test_beam_search_with_cache_matches_without(overrides: dict) -> None:
    model = peaked_model(**overrides)
    prompt = torch.randint(0, TINY["vocab_size"], (2, 4), generator=torch.Generator().manual_seed(3))
    kwargs = dict(
        max_new_tokens=5, do_sample=False, num_beams=3, pad_token_id=0, attention_mask=torch.ones_like(prompt)
    )
    assert torch.equal(
        model.generate(prompt, use_cache=True, **kwargs), model.generate(prompt, use_cache=False, **kwargs)
    )


@pytest.mark.parametrize(
    "arguments,named", [({"loss_reduction": "max"}, "loss_reduction"), ({"loss_chunk_size": -1}, "loss_chunk_size")]
)
def test_invalid_training_arguments_name_the_argument(arguments: dict, named: str) -> None:
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=named):
        tiny_model()(ids, labels=ids, **arguments)


def expected_parameters(config: NeuroTrailsConfig) -> int:
    """Closed form: embeddings, blocks, final norms and LM heads of a bias-free LLaMA ensemble."""
    d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * config.head_dim
    block = 2 * d * d + 2 * d * kv + 3 * d * f + 2 * d
    embeddings = v * d * (1 if config.share_embeddings else config.ensemble_size)
    head = config.head_layers * block + d + v * d
    return embeddings + config.num_shared_layers * block + config.ensemble_size * head


@pytest.mark.parametrize(
    "method,millions",
    [("dense", 134.1), ("treenet", 296.5), ("neurotrails", 296.5), ("full_ensemble", 402.3)],
)
def test_130m_parameter_counts_match_the_formula_and_the_paper(method: str, millions: float) -> None:
    config = build_config("130m", method, ensemble_size=3, head_layers=8)
    with torch.device("meta"):
        model = NeuroTrailsForCausalLM(config)
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_parameters(config)
    assert round(count / 1e6, 1) == millions


def test_tiny_parameter_counts_match_the_formula() -> None:
    for overrides in ({}, {"head_layers": 3, "share_embeddings": False}, {"ensemble_size": 1}):
        model = tiny_model(**overrides)
        assert sum(p.numel() for p in model.parameters()) == expected_parameters(model.config)


def test_every_size_loads_and_builds_a_valid_config() -> None:
    sizes = available_sizes()
    for name in ("9m", "20m", "35m", "60m", "71m", "100m", "130m", "250m", "350m", "1b", "tiny"):
        assert name in sizes
        config = build_config(name, "neurotrails")
        assert config.num_hidden_layers == load_size(name)["num_hidden_layers"]
    assert build_config("350m", "neurotrails").head_layers == 16  # the paper's 16 of 24


@pytest.mark.parametrize(
    "fields,field_named",
    [
        ({"ensemble_size": 0}, "ensemble_size"),
        ({"head_layers": 0}, "head_layers"),
        ({"head_layers": 4}, "head_layers"),
        ({"share_embeddings": False}, "share_embeddings"),
        ({"tie_word_embeddings": True}, "tie_word_embeddings"),
        ({"head_execution": "batched"}, "head_execution"),  # gone: one head path
        ({"loss_chunk_size": 512}, "loss_chunk_size"),  # now an argument of the forward
        ({"hidden_size": 30}, "hidden_size"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ],
)
def test_invalid_configs_name_the_field(fields: dict, field_named: str) -> None:
    with pytest.raises(ValueError, match=field_named):
        NeuroTrailsConfig(**{**TINY, "ensemble_size": 2, "head_layers": 2, **fields})


def test_unknown_size_and_method_are_clear_errors() -> None:
    with pytest.raises(FileNotFoundError, match="unknown model size '13m'"):
        build_config("13m", "dense")
    with pytest.raises(ValueError, match="method"):
        build_config("tiny", "moe")
