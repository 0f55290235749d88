"""Recipe values read as users type them: by the field's type, on the command line and in files; bad YAML named."""

from pathlib import Path

import pytest

from nt_llm.train import RecipeError, load_recipe
from nt_llm.train.recipe import apply_overrides, load_section, parse_override, save_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "neurotrails_tiny.yaml"


def _field(recipe, dotted: str):
    value = recipe
    for part in dotted.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


@pytest.mark.parametrize(
    "override,key,expected",
    [
        ("optim.lr=1e-3", "optim.lr", 0.001),  # YAML 1.1 alone reads a string
        ("optim.lr=2.5E-4", "optim.lr", 0.00025),
        ("optim.lr=1", "optim.lr", 1.0),
        ("optim.max_steps=1e3", "optim.max_steps", 1000),
        ("optim.max_steps=2000.0", "optim.max_steps", 2000),
        ("data.batch_size=32", "data.batch_size", 32),
        ("logging.progress_bar=false", "logging.progress_bar", False),
        ("logging.progress_bar=True", "logging.progress_bar", True),
        ("model.compile=yes", "model.compile", True),
        ("optim.implementation=for_loop", "optim.implementation", "for_loop"),
        ("run.name=2024", "run.name", "2024"),  # a string field takes the text as typed
        ("checkpoint.hub_revision=yes", "checkpoint.hub_revision", "yes"),
        ("optim.precision=no", "optim.precision", "no"),
        ("checkpoint.push_to_hub=null", "checkpoint.push_to_hub", None),
        ("eval.max_batches=5", "eval.max_batches", 5),
        ("optim.betas=[0.9, 9.5e-1]", "optim.betas", (0.9, 0.95)),
        # A config field, flat under model: typed by the NeuroTrailsConfig field, kept in ModelRecipe.config.
        ("model.hidden_size=1.28e2", "model.config.hidden_size", 128),
        ("model.share_embeddings=yes", "model.config.share_embeddings", True),
        ("model.head_layers=null", "model.config.head_layers", None),
        ("model.rope_parameters.rope_theta=1e4", "model.config.rope_parameters.rope_theta", 10000.0),
        ("sparsity.include=[heads.*.lm_head.weight]", "sparsity.include", ("heads.*.lm_head.weight",)),
    ],
)
def test_overrides_are_converted_by_the_field_type(override: str, key: str, expected) -> None:
    value = _field(load_recipe(TINY, [override]), key)
    assert value == expected and type(value) is type(expected)


def test_the_sparsity_schedule_follows_an_overridden_step_count() -> None:
    recipe = load_recipe(TINY, ["optim.max_steps=1e3"])
    assert recipe.optim.max_steps == recipe.sparsity.total_steps == 1000


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lr=abc", "optim.lr: expected a number, got 'abc'"),
        ("optim.max_steps=1.5", "optim.max_steps: expected an integer, got 1.5"),
        ("optim.max_steps=many", "optim.max_steps: expected an integer, got 'many'"),
        ("logging.progress_bar=maybe", "logging.progress_bar: expected true or false, got 'maybe'"),
        ("eval.max_batches=all", "eval.max_batches: expected an integer or null, got 'all'"),
        ("optim.betas=[0.9]", "optim.betas: expected a list of 2 values, got [0.9]"),
        ("optim.betas=[0.9, x]", "optim.betas[1]: expected a number, got 'x'"),
        ("model.hidden_size=wide", "model.hidden_size: expected an integer, got 'wide'"),
        ("model.ensemble_size=0", "model.ensemble_size must be an integer >= 1, got 0"),
        ("model.hidden_layers=4", "unknown key(s) ['model.hidden_layers']"),
        ("model.vocab_size=8", "['model.vocab_size'] come from the tokenizer"),
        ("model.config_overrides.rope_theta=1e4", "model.config_overrides is gone: write its keys ['rope_theta']"),
        ("sparsity.total_steps=5", "sparsity.total_steps is derived from optim.max_steps"),
        ("optim.lr=[1,", "override 'optim.lr=[1,': the value is not valid YAML at line 1"),
    ],
)
def test_a_value_that_does_not_convert_names_key_value_and_type(override: str, message: str) -> None:
    with pytest.raises(RecipeError) as refused:
        load_recipe(TINY, [override])
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "override",
    [
        "optim.lr=.inf",
        "optim.lr=nan",
        "optim.lr=-.inf",
        "sparsity.density=.NaN",
        "optim.grad_clip=inf",
        "optim.max_steps=.inf",
    ],
)
def test_non_finite_numbers_are_refused_with_the_key(override: str) -> None:
    key = override.partition("=")[0]
    with pytest.raises(RecipeError, match=rf"^{key.replace('.', '[.]')}: expected (a finite number|an integer)"):
        load_recipe(TINY, [override])


def test_recipe_files_read_numbers_as_typed(tmp_path: Path) -> None:
    (tmp_path / "optim.yaml").write_text("lr: 1e-3\nmax_steps: 1e3\nwarmup_steps: 1e2\n")
    path = tmp_path / "recipe.yaml"
    path.write_text(
        TINY.read_text()
        .replace("optim:\n  lr: 3.0e-3", "optim:\n  lr: 3e-3")
        .replace("  density: 0.9", "  density: 9e-1")
    )
    recipe = load_recipe(path)
    assert recipe.optim.lr == 0.003 and recipe.sparsity.density == 0.9

    path.write_text("optim: optim.yaml\nmodel: {method: dense}\n")
    recipe = load_recipe(path)
    assert (recipe.optim.lr, recipe.optim.max_steps, recipe.optim.warmup_steps) == (0.001, 1000, 100)
    assert type(recipe.optim.max_steps) is int

    path.write_text("run: {name: 2024}\nmodel: {method: dense}\n")
    with pytest.raises(RecipeError, match=r"run\.name: expected a string \(quote it in YAML\), got 2024"):
        load_recipe(path)
    path.write_text("optim: {lr: .inf}\nmodel: {method: dense}\n")
    with pytest.raises(RecipeError, match=r"optim\.lr: expected a finite number, got inf"):
        load_recipe(path)


def test_a_saved_recipe_reads_back_the_same(tmp_path: Path) -> None:
    recipe = load_recipe(TINY, ["optim.eps=1e-8", "optim.lr=1e-3", "run.name=2024", "model.rms_norm_eps=1e-5"])
    save_recipe(recipe, tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml").to_dict() == recipe.to_dict()
    saved = recipe.to_dict()
    # Flat as written, and without what is derived (a saved recipe is itself a valid recipe).
    assert saved["model"]["rms_norm_eps"] == 1e-5 and "config" not in saved["model"]
    assert "total_steps" not in saved["sparsity"]


def test_malformed_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("run:\n  name: x\n optim:\n  lr: 1\n")
    with pytest.raises(RecipeError, match=rf"{path}.*not valid YAML at line 3"):
        load_recipe(path)
    path.write_text("model: {method: dense}\ndata: section.yaml\n")
    (tmp_path / "section.yaml").write_text("source: files\ntrain_files: [a.jsonl\n")
    with pytest.raises(RecipeError, match=rf"{tmp_path / 'section.yaml'}.*not valid YAML at line 3"):
        load_recipe(path)
    path.write_bytes(b"run: {name: \xff}\n")
    with pytest.raises(RecipeError, match=rf"{path} is not UTF-8"):
        load_recipe(path)


def test_overrides_apply_to_a_typed_recipe_as_to_a_file() -> None:
    """apply_overrides: the same parser and typing as load_recipe's overrides (the studies' variants use it)."""
    overrides = ["optim.lr=1e-3", "run.name=2024", "model.head_layers=2", 'sparsity.include=["heads.*", "*embed*"]']
    recipe = apply_overrides(load_recipe(TINY), overrides)
    assert recipe == load_recipe(TINY, overrides)
    assert (recipe.optim.lr, recipe.run.name, recipe.model.config["head_layers"]) == (1e-3, "2024", 2)
    assert recipe.sparsity.include == ("heads.*", "*embed*")
    with pytest.raises(RecipeError, match="override 'optim.lr' must look like section.key=value"):
        apply_overrides(recipe, ["optim.lr"])
    with pytest.raises(RecipeError, match="unknown section 'optimizer'"):
        parse_override("optimizer.lr=1")
    parts, _ = parse_override("model.rope_parameters.rope_theta=1e4")
    assert parts == ["model", "rope_parameters", "rope_theta"]


def test_a_section_file_loads_typed(tmp_path: Path) -> None:
    data = load_section(REPO / "recipes" / "data" / "embedded_4k.yaml", "data")
    assert (data.tokenizer, data.seq_len, data.validation_tokens) == ("embedded-4k", 256, 49152)
    (tmp_path / "bad.yaml").write_text("seq_len: many\n")
    with pytest.raises(RecipeError, match="data.seq_len: expected an integer, got 'many'"):
        load_section(tmp_path / "bad.yaml", "data")
    with pytest.raises(RecipeError, match="unknown recipe section 'dataset'"):
        load_section(tmp_path / "bad.yaml", "dataset")
