"""model.heads_init: every head a copy of head 0 at initialisation (the copy-init diagnostic), or independent heads."""

from pathlib import Path

import pytest
import torch
from helpers.configs import tiny_config
from helpers.training import tiny_recipe

from nt_llm.checkpoint import Checkpoint
from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM
from nt_llm.train import RecipeError, recipe_from_dict, train
from nt_llm.train.trainer import Trainer


def head_parameters(model: NeuroTrailsForCausalLM, index: int) -> dict[str, torch.Tensor]:
    return dict(model.heads[index].named_parameters())


def heads_equal(model: NeuroTrailsForCausalLM, a: int, b: int) -> bool:
    first, second = head_parameters(model, a), head_parameters(model, b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("share_embeddings", [True, False])
def test_copies_start_every_head_as_head_0_and_independent_heads_differ(share_embeddings: bool) -> None:
    layers = {} if share_embeddings else {"num_hidden_layers": 2, "head_layers": 2}
    torch.manual_seed(0)
    copies = NeuroTrailsForCausalLM(tiny_config(share_embeddings=share_embeddings, heads_init="copies", **layers))
    names = set(head_parameters(copies, 0))
    assert any(name.startswith("layers.") for name in names) and {"norm.weight", "lm_head.weight"} <= names
    assert ("embed_tokens.weight" in names) is not share_embeddings
    assert all(heads_equal(copies, 0, h) for h in (1, 2))
    first, second = copies.heads[0].parameters(), copies.heads[1].parameters()
    assert not any(p.data_ptr() == q.data_ptr() for p, q in zip(first, second, strict=True))  # copies, not shared

    torch.manual_seed(0)
    independent = NeuroTrailsForCausalLM(tiny_config(share_embeddings=share_embeddings, **layers))
    assert independent.config.heads_init == "independent"
    assert not heads_equal(independent, 0, 1) and not heads_equal(independent, 1, 2)
    # Head 0 is drawn the same way either way: the copies are the other heads', not a new draw.
    assert torch.equal(copies.heads[0].lm_head.weight, independent.heads[0].lm_head.weight)


@pytest.mark.parametrize("bad", ["copy", "", None, 1])
def test_a_bad_heads_init_is_refused_by_name(bad) -> None:
    with pytest.raises(ValueError, match="heads_init"):
        tiny_config(heads_init=bad)


def test_the_recipe_takes_model_heads_init_and_refuses_a_bad_one(tmp_path: Path) -> None:
    recipe = recipe_from_dict(tiny_recipe(tmp_path, model={"heads_init": "copies"}))
    assert recipe.model.config["heads_init"] == "copies"
    assert recipe.model.to_dict()["heads_init"] == "copies"
    assert "heads_init" not in recipe_from_dict(tiny_recipe(tmp_path)).model.config  # the default writes nothing
    with pytest.raises(RecipeError, match="model.heads_init"):
        recipe_from_dict(tiny_recipe(tmp_path, model={"heads_init": "clones"}))


def test_the_trainer_builds_copies_that_differ_only_by_their_masks(tmp_path: Path) -> None:
    trainer = Trainer(recipe_from_dict(tiny_recipe(tmp_path, model={"heads_init": "copies"})))
    trainer._build()  # what a run does first: the model, its optimizer and the masks, which zero the weights
    masks = trainer.sparsity.masks
    heads = [dict(trainer.model.heads[h].named_parameters()) for h in range(3)]
    for name, first in heads[0].items():
        mask0 = masks.get(f"heads.0.{name}")
        for h in (1, 2):
            if mask0 is None:
                assert torch.equal(first, heads[h][name]), name
            else:  # where both heads keep the weight it is head 0's; elsewhere at least one is zero
                both = mask0 & masks[f"heads.{h}.{name}"]
                assert torch.equal(first[both], heads[h][name][both]), name
                assert not torch.equal(mask0, masks[f"heads.{h}.{name}"]), name


def test_copied_heads_train_apart_under_different_masks_and_load_as_trained(tmp_path: Path) -> None:
    recipe = tiny_recipe(
        tmp_path,
        model={"heads_init": "copies"},
        optim={"max_steps": 2, "warmup_steps": 1},
        eval={"every": 2},
        checkpoint={"every": 2},
        sparsity={"update_frequency": 1},
    )
    result = train(recipe_from_dict(recipe))
    checkpoint = Checkpoint.open(result.checkpoint)

    # The heads' masks are drawn with different seeds: the only difference between the heads at the start.
    masks = checkpoint.masks()
    per_head = [{k.split(".", 2)[2]: v for k, v in masks.items() if k.startswith(f"heads.{h}.")} for h in range(3)]
    assert per_head[0] and per_head[0].keys() == per_head[1].keys() == per_head[2].keys()
    for h in (1, 2):
        assert any(not torch.equal(per_head[0][k], per_head[h][k]) for k in per_head[0])

    model = NeuroTrailsForCausalLM.from_pretrained(checkpoint.model_dir)
    assert model.config.heads_init == "copies"
    assert not heads_equal(model, 0, 1) and not heads_equal(model, 0, 2)  # trained apart, not copied again on load

    # A save and a load keep the trained weights as they are.
    model.save_pretrained(tmp_path / "saved")
    loaded = NeuroTrailsForCausalLM.from_pretrained(tmp_path / "saved")
    saved = model.state_dict()
    assert all(torch.equal(value, saved[key]) for key, value in loaded.state_dict().items())
    assert isinstance(loaded.config, NeuroTrailsConfig) and loaded.config.heads_init == "copies"
