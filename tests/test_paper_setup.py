"""The paper's training setup as recipe options: the embeddings' init std, and run.seed driving data and masks."""

import pytest
import torch
from helpers.configs import tiny_config

from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM
from nt_llm.train import recipe_from_dict

PAPER_STD = (2 / 5) ** 0.5


@pytest.mark.parametrize("share_embeddings", [True, False])
def test_embedding_init_std_draws_every_embedding_and_leaves_linears_at_initializer_range(
    share_embeddings: bool,
) -> None:
    layers = {} if share_embeddings else {"head_layers": 2, "num_hidden_layers": 2}
    config = tiny_config(vocab_size=512, share_embeddings=share_embeddings, embedding_init_std=PAPER_STD, **layers)
    torch.manual_seed(0)
    model = NeuroTrailsForCausalLM(config)
    embeddings = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    assert len(embeddings) == (1 if share_embeddings else config.ensemble_size)
    for weight in embeddings:
        assert abs(weight.std().item() - PAPER_STD) < 0.03
    for head in model.heads:
        assert abs(head.lm_head.weight.std().item() - config.initializer_range) < 0.003


def test_without_embedding_init_std_embeddings_take_initializer_range() -> None:
    torch.manual_seed(0)
    model = NeuroTrailsForCausalLM(tiny_config(vocab_size=512))
    assert abs(model.embed_tokens.weight.std().item() - model.config.initializer_range) < 0.003


@pytest.mark.parametrize("bad", [0, -0.1, "wide", True])
def test_a_bad_embedding_init_std_is_named(bad) -> None:
    with pytest.raises(ValueError, match="embedding_init_std"):
        tiny_config(embedding_init_std=bad)


def test_embedding_init_std_survives_a_save_and_load(tmp_path) -> None:
    config = tiny_config(embedding_init_std=PAPER_STD)
    config.save_pretrained(tmp_path)
    assert NeuroTrailsConfig.from_pretrained(tmp_path).embedding_init_std == PAPER_STD


def test_run_seed_drives_data_order_and_mask_seeds_unless_set() -> None:
    sparsity = {"density": 0.9}
    recipe = recipe_from_dict({"run": {"seed": 7}, "sparsity": sparsity})
    assert (recipe.data.seed, recipe.sparsity.seed) == (7, 7)
    pinned = recipe_from_dict({"run": {"seed": 7}, "sparsity": {**sparsity, "seed": 1}, "data": {"seed": 2}})
    assert (pinned.data.seed, pinned.sparsity.seed) == (2, 1)
    # The saved recipe holds the seeds that ran, so a resume or a rerun from it sees the same streams.
    again = recipe_from_dict(recipe.to_dict())
    assert (again.data.seed, again.sparsity.seed) == (7, 7)
