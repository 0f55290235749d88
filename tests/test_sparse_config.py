"""SparsityConfig validation and parameter selection by name patterns."""

import pytest
from torch import nn

from nt_llm.sparse import NEUROTRAILS_HEADS, SparsityConfig, select_parameters
from nt_llm.sparse.config import PAPER_DST


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"density": 0.0}, "density"),
        ({"density": 1.5}, "density"),
        ({"distribution": "gaussian"}, "distribution"),
        ({"prune": "random"}, "prune"),
        ({"growth": "momentum"}, "growth"),
        ({"temperature": -1.0}, "temperature"),
        ({"prune_rate": 1.2}, "prune_rate"),
        ({"prune_rate_decay": "step"}, "prune_rate_decay"),
        ({"prune_rate": 0.2, "prune_rate_floor": 0.3}, "prune_rate_floor"),
        ({"final_density": 0.95, "density": 0.9}, "final_density"),
        ({"update_frequency": 0}, "update_frequency"),
        ({"total_steps": 0}, "total_steps"),
        ({"end_fraction": 1.5}, "end_fraction"),
        ({"include": ()}, "include"),
        ({"exclude": ("",)}, "exclude"),
    ],
)
def test_bad_field_is_named(kwargs, field):
    with pytest.raises(ValueError, match=rf"SparsityConfig\.{field}\b"):
        SparsityConfig(**kwargs)


def test_defaults_are_the_paper_recipe():
    c = SparsityConfig()
    assert (c.density, c.distribution, c.growth, c.prune, c.temperature) == (
        0.9,
        "erk",
        "gradient",
        "soft_magnitude",
        3.0,
    )
    assert (c.prune_rate, c.prune_rate_decay, c.update_frequency) == (0.5, "cosine", 50)
    assert c.include == NEUROTRAILS_HEADS
    # PAPER_DST is where the paper's DST settings are written (the study and the defaults read it).
    assert {key: getattr(c, key) for key in PAPER_DST} == PAPER_DST
    assert PAPER_DST == {
        "distribution": "erk",
        "prune": "soft_magnitude",
        "temperature": 3.0,
        "growth": "gradient",
        "prune_rate": 0.5,
        "prune_rate_decay": "cosine",
    }


def test_lists_from_yaml_become_tuples_and_stop_step_wins():
    c = SparsityConfig(include=["a*"], exclude=["b"], total_steps=100, end_fraction=0.5)
    assert c.include == ("a*",) and c.exclude == ("b",)
    assert c.last_update_step == 50
    assert SparsityConfig(total_steps=100, stop_step=70).last_update_step == 70


NAMES = [
    "embed_tokens.weight",
    "backbone.0.self_attn.q_proj.weight",
    "heads.0.layers.0.self_attn.q_proj.weight",
    "heads.0.layers.0.mlp.up_proj.weight",
    "heads.0.layers.0.input_layernorm.weight",
    "heads.0.norm.weight",
    "heads.0.lm_head.weight",
    "heads.1.lm_head.weight",
]


def test_neurotrails_default_selects_heads_projections_and_lm_heads():
    got = select_parameters(NAMES, NEUROTRAILS_HEADS, ())
    assert got == [
        "heads.0.layers.0.self_attn.q_proj.weight",
        "heads.0.layers.0.mlp.up_proj.weight",
        "heads.0.lm_head.weight",
        "heads.1.lm_head.weight",
    ]


def test_exclude_removes_and_unmatched_pattern_is_an_error():
    assert select_parameters(NAMES, ("heads.*.lm_head.weight",), ("heads.1.*",)) == ["heads.0.lm_head.weight"]
    with pytest.raises(ValueError, match="include pattern 'decoder.*' matches no parameter"):
        select_parameters(NAMES, ("heads.*", "decoder.*"), ())
    with pytest.raises(ValueError, match="exclude pattern 'nothing' matches no parameter"):
        select_parameters(NAMES, ("heads.*",), ("nothing",))
    with pytest.raises(ValueError, match="leave no parameter"):
        select_parameters(NAMES, ("heads.0.norm.weight",), ("heads.0.*",))


def test_pattern_error_from_dynamic_sparsity_names_the_model_parameters():
    from nt_llm.sparse import DynamicSparsity

    with pytest.raises(ValueError, match=r"matches no parameter; parameters are e.g. \['0.weight'"):
        DynamicSparsity(nn.Sequential(nn.Linear(4, 4)), SparsityConfig())
