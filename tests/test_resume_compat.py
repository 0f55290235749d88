"""The resume check: a checkpoint's recipe against the run's, including checkpoints of earlier versions."""

import pytest

from nt_llm.checkpoint import CheckpointError
from nt_llm.train import recipe_from_dict
from nt_llm.train.trainer import check_compatible


def _recipe():
    return recipe_from_dict(
        {
            "model": {"size": "tiny", "method": "neurotrails", "ensemble_size": 3, "head_layers": 2},
            "sparsity": {"density": 0.5},
            "optim": {"max_steps": 10, "warmup_steps": 1},
        }
    )


def _meta(recipe_dict: dict) -> dict:
    return {"world_size": 1, "recipe": recipe_dict}


def test_the_same_recipe_resumes_and_a_changed_model_is_refused_by_key() -> None:
    recipe = _recipe()
    check_compatible(_meta(recipe.to_dict()), recipe, world_size=1)
    saved = recipe.to_dict()
    saved["model"]["head_layers"] = 3
    with pytest.raises(CheckpointError, match=r"model\.head_layers \(3 there, 2 here\)"):
        check_compatible(_meta(saved), recipe, world_size=1)


@pytest.mark.parametrize(
    "legacy",
    [
        {"model": {"head_execution": "batched"}},
        {"model": {"config_overrides": {"rope_theta": 10000.0}}},
        {"sparsity": {"total_steps": 10}},
    ],
)
def test_a_checkpoint_of_an_earlier_version_is_refused_with_what_to_do(legacy: dict) -> None:
    recipe = _recipe()
    saved = recipe.to_dict()
    for section, values in legacy.items():
        saved[section].update(values)
    with pytest.raises(CheckpointError, match="earlier nt_llm version.*export or evaluate its model/ folder"):
        check_compatible(_meta(saved), recipe, world_size=1)
