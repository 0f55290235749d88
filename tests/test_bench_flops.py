"""nt_llm.flops against a hand count on a tiny config, and against built models."""

import pytest
import torch
from helpers.configs import TINY_FIELDS

from nt_llm.flops import (
    attention_flops_per_token,
    block_linear_weights,
    forward_flops_per_token,
    linear_weights,
    model_linear_weights,
    training_flops_per_token,
)
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM

TINY = {**TINY_FIELDS, "num_hidden_layers": 4, "vocab_size": 100}


def config(**shape) -> NeuroTrailsConfig:
    return NeuroTrailsConfig(**TINY, **shape)


def test_hand_count_of_a_neurotrails_config():
    c = config(ensemble_size=3, head_layers=2)
    # One block: q, k, v, o are 32x32 each (4096) and the gated MLP 3 x 32x64 (6144).
    assert block_linear_weights(c) == 4 * 32 * 32 + 3 * 32 * 64 == 10240
    # Backbone: 2 blocks once; 3 heads of 2 blocks and a 32x100 LM head each.
    assert linear_weights(c) == 2 * 10240 + 3 * (2 * 10240 + 3200) == 91520
    # Attention: 2 matmuls x 2 FLOPs x width 32 x context 16, over 2 + 3 * 2 = 8 blocks.
    assert attention_flops_per_token(c, 16) == 4 * 32 * 16 * 8 == 16384
    assert forward_flops_per_token(c, 16) == 2 * 91520 + 16384 == 199424
    assert training_flops_per_token(c, 16) == 3 * 199424


def test_dense_and_full_ensemble_hand_counts():
    dense = config(ensemble_size=1, head_layers=4)
    full = config(ensemble_size=3, head_layers=4, share_embeddings=False)
    assert linear_weights(dense) == 4 * 10240 + 3200
    assert linear_weights(full) == 3 * (4 * 10240 + 3200)
    assert attention_flops_per_token(full, 8) == 3 * attention_flops_per_token(dense, 8)


def test_head_density_scales_only_the_heads():
    c = config(ensemble_size=3, head_layers=2)
    assert linear_weights(c, head_density=0.5) == 2 * 10240 + 0.5 * 3 * (2 * 10240 + 3200)
    with pytest.raises(ValueError, match="head_density"):
        linear_weights(c, head_density=0.0)
    with pytest.raises(ValueError, match="context"):
        attention_flops_per_token(c, 0)


@pytest.mark.parametrize(
    "shape",
    [
        dict(ensemble_size=1, head_layers=4),
        dict(ensemble_size=3, head_layers=2),
        dict(ensemble_size=2, head_layers=4, share_embeddings=False),
        dict(ensemble_size=2, head_layers=2, num_key_value_heads=2),
    ],
)
def test_analytic_count_matches_the_built_model(shape):
    c = config(**shape)
    model = NeuroTrailsForCausalLM(c)
    assert model_linear_weights(model, nonzero=False) == linear_weights(c)


def test_nonzero_count_sees_masked_weights():
    c = config(ensemble_size=2, head_layers=2)
    model = NeuroTrailsForCausalLM(c)
    dense = model_linear_weights(model)
    with torch.no_grad():
        model.heads[0].lm_head.weight[:10].zero_()  # 10 rows of 32
    assert model_linear_weights(model) == dense - 320
    assert model_linear_weights(model, nonzero=False) == linear_weights(c)
