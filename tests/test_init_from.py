"""model.init_from: a run whose backbone and heads start from a LlamaForCausalLM folder the tests save themselves.

At step 0 (dense masks, before any update) every head computes the source's logits, so the averaged logits are the
source's, for each method; with DST the heads start identical and differ only by their masks; a shape that does not
fit is refused naming model.init_from and the field; `nt-llm train ... model.init_from=DIR` trains, and resumes with
the source folder deleted.
"""

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers.configs import TINY_SIZE, tiny_size_file
from helpers.data import tiny_tokenizer
from helpers.training import SHAPES, reset_accelerate, tiny_recipe
from transformers import LlamaConfig, LlamaForCausalLM

from nt_llm import cli
from nt_llm.data import vocab_size_of
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.train import RecipeError, recipe_from_dict
from nt_llm.train.recipe import ModelRecipe
from nt_llm.train.trainer import Trainer, model_config


def save_llama(folder: Path, seed: int = 3, **overrides: Any) -> Path:
    """A tiny LlamaForCausalLM (grouped-query attention, the tiny tokenizer's vocabulary) saved to ``folder``."""
    torch.manual_seed(seed)
    fields = {**TINY_SIZE, "num_key_value_heads": 2, "vocab_size": vocab_size_of(tiny_tokenizer()), **overrides}
    LlamaForCausalLM(LlamaConfig(**fields)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_llama(tmp_path_factory.mktemp("llama") / "source")


def init_recipe(tmp_path: Path, method: str, source: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """The tiny recipe of ``method`` started from ``source``, without a size (the source gives the architecture)."""
    recipe = tiny_recipe(tmp_path, method, optim={"precision": "no"}, **sections)
    model = {key: value for key, value in recipe["model"].items() if key != "size"}
    recipe["model"] = {**model, "init_from": str(source), **sections.get("model", {})}
    return recipe


def built(recipe: dict[str, Any]) -> Trainer:
    """A trainer with its model, optimizer and DST built as a run builds them, before any step."""
    reset_accelerate()
    trainer = Trainer(recipe_from_dict(recipe))
    trainer._build()
    return trainer


def config_of(tmp_path: Path, source: Path, method: str = "neurotrails", **model: Any):
    return model_config(recipe_from_dict(init_recipe(tmp_path, method, source, model=model)), tiny_tokenizer())


# ---- step 0: the source's outputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(SHAPES))
def test_at_step_0_every_head_and_the_average_are_the_source(tmp_path: Path, source: Path, method: str) -> None:
    dense_masks = {"sparsity": {"density": 1.0}} if method == "neurotrails" else {}
    trainer = built(init_recipe(tmp_path, method, source, **dense_masks))
    model = trainer.model.eval()
    llama = LlamaForCausalLM.from_pretrained(source).eval()
    assert model.config.num_key_value_heads == 2 and model.config.vocab_size == llama.config.vocab_size
    ids = torch.randint(0, llama.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = llama(ids).logits
        out = model(ids, output_head_logits=True)
    assert out.head_logits.shape[0] == model.config.ensemble_size
    for head_logits in out.head_logits:
        torch.testing.assert_close(head_logits, expected, rtol=0, atol=0)  # the same modules on the same weights
    torch.testing.assert_close(out.logits, expected, rtol=1e-6, atol=1e-6)  # (x + x + x) / 3 rounds


def test_a_tied_source_gives_each_head_an_untied_copy_of_its_embedding(tmp_path: Path) -> None:
    tied = save_llama(tmp_path / "tied", tie_word_embeddings=True)
    model = built(init_recipe(tmp_path, "treenet", tied)).model
    assert model.config.tie_word_embeddings is False
    heads = [head.lm_head.weight for head in model.heads]
    for weight in heads:
        assert torch.equal(weight, model.embed_tokens.weight)
        assert weight.data_ptr() != model.embed_tokens.weight.data_ptr()
    assert heads[0].data_ptr() != heads[1].data_ptr()


def test_with_dst_the_heads_start_identical_and_differ_by_their_masks(tmp_path: Path, source: Path) -> None:
    trainer = built(init_recipe(tmp_path, "neurotrails", source))  # density 0.5
    llama = LlamaForCausalLM.from_pretrained(source).state_dict()
    named = dict(trainer.model.named_parameters())
    masks = trainer.sparsity.masks
    shared = trainer.model.config.num_shared_layers
    for name, mask in masks.items():
        _, head, rest = name.split(".", 2)  # heads.<h>.<layers.j.... | norm | lm_head>
        if rest.startswith("layers."):
            _, layer, leaf = rest.split(".", 2)
            rest = f"model.layers.{shared + int(layer)}.{leaf}"
        torch.testing.assert_close(named[name].detach(), llama[rest] * mask, rtol=0, atol=0)
    assert not torch.equal(masks["heads.0.lm_head.weight"], masks["heads.1.lm_head.weight"])


# ---- what is refused, by name ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "named"),
    [
        ({"hidden_size": 64}, ["model.init_from", "model.hidden_size", "hidden_size 32"]),
        ({"intermediate_size": 128}, ["model.init_from", "model.intermediate_size"]),
        ({"num_key_value_heads": 4}, ["model.init_from", "model.num_key_value_heads"]),
        ({"num_hidden_layers": 4}, ["model.init_from", "model.num_hidden_layers"]),
        ({"head_layers": 4}, ["model.init_from", "head_layers (4)", "3 layers"]),
    ],
)
def test_a_shape_the_source_cannot_fill_is_refused_by_name(
    tmp_path: Path, source: Path, model: dict[str, Any], named: list[str]
) -> None:
    with pytest.raises(RecipeError) as refused:
        config_of(tmp_path, source, **model)
    for text in named:
        assert text in str(refused.value), str(refused.value)


def test_a_vocabulary_other_than_the_tokenizers_is_refused(tmp_path: Path) -> None:
    wider = save_llama(tmp_path / "wider", vocab_size=vocab_size_of(tiny_tokenizer()) + 1)
    with pytest.raises(RecipeError, match=r"model\.init_from: .* has vocab_size \d+, data\.tokenizer has \d+ tokens"):
        config_of(tmp_path, wider)


def test_a_size_beside_init_from_must_match_it(tmp_path: Path, source: Path) -> None:
    assert config_of(tmp_path, source, size=tiny_size_file(tmp_path)).hidden_size == TINY_SIZE["hidden_size"]
    other = tiny_size_file(tmp_path, "wide.yaml", intermediate_size=96)
    with pytest.raises(RecipeError, match=r"model\.init_from: model\.size .*wide\.yaml.* intermediate_size 96"):
        config_of(tmp_path, source, size=other)


def test_other_llama_fields_override_the_source(tmp_path: Path, source: Path) -> None:
    config = config_of(tmp_path, source, max_position_embeddings=32, rms_norm_eps=1e-5)
    assert (config.max_position_embeddings, config.rms_norm_eps) == (32, 1e-5)
    assert config.hidden_size == TINY_SIZE["hidden_size"]  # the rest is the source's


def test_what_is_not_a_llama_folder_is_refused_naming_init_from(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"model\.init_from: cannot read a model config from .*missing"):
        config_of(tmp_path, tmp_path / "missing")
    ensemble = tmp_path / "ensemble"
    trained = built(tiny_recipe(tmp_path, "treenet", optim={"precision": "no"})).model
    NeuroTrailsForCausalLM(trained.config).save_pretrained(ensemble)
    with pytest.raises(RecipeError, match=r"'neurotrails' model .*--single-head.*model_type 'llama'"):
        config_of(tmp_path, ensemble)


def test_the_recipe_field() -> None:
    assert ModelRecipe().size == "tiny"  # no source: the default size as before
    assert ModelRecipe(init_from="meta-llama/Llama-3.2-1B").size is None  # the source gives the architecture
    with pytest.raises(RecipeError, match="model.init_from must name a folder or a Hub id"):
        ModelRecipe(init_from=" ")
    section = ModelRecipe(init_from="some/llama", config={"ensemble_size": 2}).to_dict()
    assert list(section)[:4] == ["size", "method", "init_from", "ensemble_size"]


# ---- the command line, and a resume without the source ----------------------------------------------------------


def test_nt_llm_train_with_init_from_trains_and_resumes_without_the_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = save_llama(tmp_path / "source")
    recipe = tiny_recipe(tmp_path, "neurotrails")  # its size file is the source's shape: accepted as a check
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    argv = ["train", "--recipe", str(path), f"model.init_from={source}", "eval.every=2", "checkpoint.every=2"]
    reset_accelerate()
    with caplog.at_level(logging.INFO, logger="nt_llm.train.init_from"):
        assert cli.main([*argv, "optim.max_steps=2"]) == 0
    assert "1 shared blocks and 3 heads of 2 blocks start from" in caplog.text
    assert (tmp_path / "run" / "checkpoints" / "step_2").is_dir()

    shutil.rmtree(source)  # the checkpoint holds the weights and, in model/config.json, the architecture
    caplog.clear()
    reset_accelerate()
    with caplog.at_level(logging.INFO, logger="nt_llm.train.init_from"):
        assert cli.main([*argv, "--resume", "latest", "optim.max_steps=4"]) == 0
    assert "is not read: the run resumes" in caplog.text
    assert (tmp_path / "run" / "checkpoints" / "step_4").is_dir()

    reset_accelerate()  # a fresh start does need the source: refused by name, exit code 2
    fresh = [f"run.output_dir={tmp_path / 'fresh'}", "optim.max_steps=2"]
    assert cli.main([*argv, *fresh]) == 2
    assert not (tmp_path / "fresh").exists()
