"""The paper-sized recipes carry the paper's training setup (its LLM training script and Table settings)."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from nt_llm.modeling.sizes import build_config, load_size
from nt_llm.study import ablate, reproduce
from nt_llm.train import load_recipe
from nt_llm.train.recipe import ModelRecipe, recipe_from_dict

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("size, layers, head_layers", [("130m", 12, 8), ("350m", 24, 16)])
@pytest.mark.parametrize("method", ["dense", "treenet", "neurotrails", "full_ensemble"])
def test_paper_recipe(method: str, size: str, layers: int, head_layers: int) -> None:
    recipe = load_recipe(RECIPES / f"{method}_{size}.yaml")
    assert load_size(recipe.model.size)["num_hidden_layers"] == layers
    optim = recipe.optim
    # Adam at 1.5e-3, no weight decay, no gradient clipping, bf16; 512 sequences of 256 tokens of C4 (t5-base).
    assert (optim.lr, optim.weight_decay, optim.grad_clip, optim.precision) == (1.5e-3, 0.0, 0.0, "bf16")
    assert optim.total_batch_size == 512 and recipe.data.seq_len == 256
    assert (recipe.data.source, recipe.data.tokenizer) == ("c4", "t5-base")
    density = recipe.sparsity.density if recipe.sparsity is not None else 1.0
    # Warmup 1000 / density and 10k / density steps: a sparse model gets the steps its density saves.
    assert optim.max_steps == int(10_000 / density) and optim.warmup_steps == int(1_000 / density)
    if method in ("treenet", "neurotrails"):
        assert (recipe.model.config["ensemble_size"], recipe.model.config["head_layers"]) == (3, head_layers)
    if method == "neurotrails":
        s = recipe.sparsity
        assert (s.density, s.distribution, s.growth, s.prune, s.temperature) == (
            0.9,
            "erk",
            "gradient",
            "soft_magnitude",
            3.0,
        )
        assert (s.prune_rate, s.prune_rate_decay, s.update_frequency) == (0.5, "cosine", 50)
    else:
        assert recipe.sparsity is None


@pytest.mark.parametrize("method", ["dense", "treenet", "neurotrails", "full_ensemble"])
def test_cpu_recipes_are_the_study_settings_at_150_steps(method: str) -> None:
    """`make demo` trains these: they must be the runs `nt-llm ablate` makes at 150 steps, seed 0, lr 2e-3."""
    parser = reproduce.argparse.ArgumentParser()
    reproduce.add_common_arguments(parser)
    args = parser.parse_args(["--steps", "150", "--lr", "2e-3", "--seeds", "0"])
    spec = next(s for s in ablate.variant_specs({"paper": ()}, [0], 0.9, baselines=True) if s.method == method)
    study = reproduce.build_recipe(spec, args, RECIPES / "unused", 2e-3, 150)
    loaded = load_recipe(RECIPES / f"{method}_cpu.yaml")
    recipe = loaded.to_dict()
    # Evaluation cadence aside (it changes no training number): the same optimisation, model, data and sparsity.
    assert {k: recipe["optim"][k] for k in study["optim"]} == study["optim"]
    # The same model, however each spells it.
    assert _built(loaded.model) == _built(recipe_from_dict(study).model)
    assert {k: recipe["data"][k] for k in study["data"]} == study["data"]
    if method == "neurotrails":
        assert {k: recipe["sparsity"][k] for k in study["sparsity"]} == study["sparsity"]


def test_the_studys_default_data_is_the_embedded_4k_recipe() -> None:
    """Without --data the study (and head-gradients) train on STUDY_DATA, shipped in the package: the same fields in
    the same order as recipes/data/embedded_4k.yaml, so a run trained from either has the same recipe text."""
    data = yaml.safe_load((RECIPES / "data" / "embedded_4k.yaml").read_text(encoding="utf-8"))
    assert list(data.items()) == list(reproduce.STUDY_DATA.items())


def _built(model: ModelRecipe) -> tuple[dict, ModelRecipe]:
    """The config a model section builds, and its training-only keys."""
    return build_config(model.size, model.method, **model.config).to_dict(), dataclasses.replace(model, config={})
