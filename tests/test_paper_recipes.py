"""The paper-sized recipes carry the paper's training setup (its LLM training script and Table settings)."""

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config, load_size
from nt_llm.sparse.config import PAPER_DST
from nt_llm.sparse.dst import select_parameters
from nt_llm.study import ablate, reproduce
from nt_llm.train import load_recipe
from nt_llm.train.recipe import ModelRecipe, load_section

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# The paper's language-modelling setup, value by value, with where it is set in its code (github
# bramgrooten/neurotrails, language_modeling/): scripts/train_llm.sh (the launch flags), torchrun_main.py and
# peft_pretraining/modeling_llama.py.
PAPER = {
    "optim.lr": 1.5e-3,  # train_llm.sh: learning_rate=1.5e-3
    "optim.weight_decay": 0.0,  # torchrun_main.py: Adam, weight decay left at 0
    "optim.grad_clip": 0.0,  # train_llm.sh: --grad_clipping 0.0
    "optim.precision": "bf16-true",  # train_llm.sh: --dtype bfloat16; torchrun_main.py casts the model to it
    "optim.total_batch_size": 512,  # train_llm.sh: --total_batch_size 512
    "data.seq_len": 256,  # torchrun_main.py: max_length 256
    "data.source": "c4",  # C4 en, streamed (scripts/download_c4.sh for a local copy)
    "data.tokenizer": "t5-base",  # torchrun_main.py: T5 tokenizer
    "model.embedding_init_std": (2 / 5) ** 0.5,  # modeling_llama.py _init_weights: nn.Embedding std sqrt(2/5)
    "model.ensemble_size": 3,  # train_llm.sh: heads=3
}
PAPER_SPARSITY = {
    "density": 0.9,  # train_llm.sh: density=0.9
    "growth": "gradient",  # train_llm.sh: growth="gradient" (RigL)
    "prune": "soft_magnitude",  # train_llm.sh: prune="magnitude_soft"
    "temperature": 3.0,  # train_llm.sh: temperature=3.0
    "prune_rate": 0.5,  # train_llm.sh: prune_rate=0.5
    "prune_rate_decay": "cosine",  # sparselearning: cosine decay of the prune rate
    "update_frequency": 50,  # train_llm.sh: update_freq=50
    "distribution": "erk",  # train_llm.sh: --sparse_init (ERK over the heads' outputs)
}
# And sparselearning/core.py masks every 2-D weight: the embedding, every block's projections, the LM heads.


@pytest.mark.parametrize("size, layers, head_layers", [("130m", 12, 8), ("350m", 24, 16)])  # train_llm.sh
@pytest.mark.parametrize("method", ["dense", "treenet", "neurotrails", "full_ensemble"])
def test_paper_recipe(method: str, size: str, layers: int, head_layers: int) -> None:
    recipe = load_recipe(RECIPES / f"{method}_{size}.yaml")
    assert load_size(recipe.model.size)["num_hidden_layers"] == layers
    values = {
        "optim.lr": recipe.optim.lr,
        "optim.weight_decay": recipe.optim.weight_decay,
        "optim.grad_clip": recipe.optim.grad_clip,
        "optim.precision": recipe.optim.precision,
        "optim.total_batch_size": recipe.optim.total_batch_size,
        "data.seq_len": recipe.data.seq_len,
        "data.source": recipe.data.source,
        "data.tokenizer": recipe.data.tokenizer,
        "model.embedding_init_std": recipe.model.config["embedding_init_std"],
        "model.ensemble_size": build_config(recipe.model.size, method, **recipe.model.config).ensemble_size,
    }
    expected = {**PAPER, "model.ensemble_size": 1 if method == "dense" else 3}
    assert values == {k: (pytest.approx(v) if isinstance(v, float) else v) for k, v in expected.items()}
    density = recipe.sparsity.density if recipe.sparsity is not None else 1.0
    # train_llm.sh: longer_training = 1/density; 10k steps and 1k warmup steps times that, truncated by int().
    assert recipe.optim.max_steps == int(10_000 * (1 / density))
    assert recipe.optim.warmup_steps == int(1_000 * (1 / density))
    if method in ("treenet", "neurotrails"):
        assert recipe.model.config["head_layers"] == head_layers  # train_llm.sh: blocks_in_head
    if method == "neurotrails":
        s = recipe.sparsity
        assert {key: getattr(s, key) for key in PAPER_SPARSITY} == PAPER_SPARSITY
        with torch.device("meta"):  # names and shapes only
            model = NeuroTrailsForCausalLM(build_config(recipe.model.size, method, **recipe.model.config))
        matrices = [name for name, p in model.named_parameters() if p.ndim == 2]
        assert select_parameters(matrices, s.include, s.exclude) == matrices
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
    # Evaluation cadence aside (it changes no training number): the same optimisation, model, data and sparsity.
    assert loaded.optim == study.optim
    # The same model, however each spells it.
    assert _built(loaded.model) == _built(study.model)
    assert loaded.data == study.data
    assert loaded.sparsity == study.sparsity


def test_the_studys_default_data_is_the_embedded_4k_recipe() -> None:
    """Without --data the study (and head-gradients) train on STUDY_DATA, the one source of that section (an installed
    package has no recipes/ folder): recipes/data/embedded_4k.yaml must load as the same data section, field by
    field as it spells them out."""
    path = RECIPES / "data" / "embedded_4k.yaml"
    assert load_section(path, "data") == reproduce.STUDY_DATA
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert written == {key: getattr(reproduce.STUDY_DATA, key) for key in written}
    assert set(written) == {
        "source",
        "data_dir",
        "tokenizer",
        "seq_len",
        "mode",
        "batch_size",
        "shuffle_buffer",
        "seed",
        "validation_tokens",
    }


@pytest.mark.parametrize("name", ["neurotrails_130m", "neurotrails_350m", "neurotrails_cpu", "neurotrails_tiny"])
def test_the_neurotrails_recipes_use_the_papers_dst(name: str) -> None:
    """PAPER_DST (nt_llm.sparse.config) is where the paper's DST settings are written; the recipes spell them out."""
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    written = yaml.safe_load((RECIPES / f"{name}.yaml").read_text(encoding="utf-8"))["sparsity"]
    assert {key: written[key] for key in PAPER_DST} == PAPER_DST
    assert {key: getattr(recipe.sparsity, key) for key in PAPER_DST} == PAPER_DST


def _built(model: ModelRecipe) -> tuple[dict, ModelRecipe]:
    """The config a model section builds, and its training-only keys."""
    return build_config(model.size, model.method, **model.config).to_dict(), dataclasses.replace(model, config={})
