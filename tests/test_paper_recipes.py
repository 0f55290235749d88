"""The paper-sized recipes carry the paper's training setup (its LLM training script and Table settings)."""

from pathlib import Path

import pytest

from nt_llm.modeling.sizes import load_size
from nt_llm.train import load_recipe

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
        assert (recipe.model.ensemble_size, recipe.model.head_layers) == (3, head_layers)
    if method == "neurotrails":
        s = recipe.sparsity
        assert (s.density, s.distribution, s.growth, s.prune, s.temperature) == (
            0.9, "erk", "gradient", "soft_magnitude", 3.0)
        assert (s.prune_rate, s.prune_rate_decay, s.update_frequency) == (0.5, "cosine", 50)
    else:
        assert recipe.sparsity is None
