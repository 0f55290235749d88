"""The method registry (nt_llm.methods): each method's shape rules, refusals that name the field, and a new method
added in one place that builds and trains."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.training import tiny_recipe

from nt_llm import methods
from nt_llm.checkpoint import complete_checkpoints
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config
from nt_llm.train import RecipeError, recipe_from_dict, train

DEPTH = {"num_hidden_layers": 6, "hidden_size": 32}  # a size's fields, as shape_for reads them


def test_the_papers_four_methods_are_registered_in_order() -> None:
    assert methods.names()[:4] == ("dense", "treenet", "neurotrails", "full_ensemble")
    shapes = {
        name: (m.ensemble, m.shared_blocks, m.share_embeddings, m.sparse)
        for name in methods.names()[:4]
        for m in [methods.get(name)]
    }
    assert shapes == {
        "dense": (False, False, True, False),
        "treenet": (True, True, True, False),
        "neurotrails": (True, True, True, True),
        "full_ensemble": (True, False, False, False),
    }


@pytest.mark.parametrize(
    "method, ensemble_size, head_layers, expected",
    [
        ("dense", None, None, {"ensemble_size": 1, "head_layers": 6, "share_embeddings": True}),
        ("treenet", 3, 4, {"ensemble_size": 3, "head_layers": 4, "share_embeddings": True}),
        ("neurotrails", 2, None, {"ensemble_size": 2, "head_layers": None, "share_embeddings": True}),
        ("full_ensemble", 3, None, {"ensemble_size": 3, "head_layers": 6, "share_embeddings": False}),
    ],
)
def test_shape_for_gives_each_method_its_shape(method, ensemble_size, head_layers, expected) -> None:
    fields = methods.shape_for(method, DEPTH, ensemble_size, head_layers)
    assert {key: fields[key] for key in expected} == expected
    assert fields["hidden_size"] == 32  # the size's own fields pass through


@pytest.mark.parametrize(
    "method, chosen, field, message",
    [
        ("dense", {"ensemble_size": 3}, "ensemble_size", "ensemble_size must be 1 for method 'dense'"),
        ("full_ensemble", {"head_layers": 4}, "head_layers", "method 'full_ensemble' takes the whole depth"),
        ("treenet", {"head_layers": 7}, "head_layers", r"head_layers \(7\) must be at most the 6 layers"),
        ("treenet", {"share_embeddings": False}, "share_embeddings", "method 'treenet' sets share_embeddings=True"),
        ("full_ensemble", {"share_embeddings": True}, "share_embeddings", "sets share_embeddings=False"),
    ],
)
def test_a_shape_the_method_cannot_take_is_refused_naming_the_field(method, chosen, field, message) -> None:
    with pytest.raises(methods.ShapeError, match=message) as caught:
        methods.shape_for(method, DEPTH, overrides=chosen, where="size 'x'")
    assert caught.value.field == field and str(caught.value).startswith(field)
    # The recipe names the key: what it can judge before the size is read at load time, the rest (head_layers
    # against the depth) when the trainer builds the config, through the same shape_for.
    if field != "head_layers":
        with pytest.raises(RecipeError, match=f"model.{field}"):
            recipe_from_dict({"model": {"size": "tiny", "method": method, **chosen}, "sparsity": {}})


def test_strict_false_drops_what_the_method_fixes_but_still_checks_overrides() -> None:
    fields = methods.shape_for("dense", DEPTH, 3, 2, strict=False)
    assert (fields["ensemble_size"], fields["head_layers"]) == (1, 6)
    with pytest.raises(methods.ShapeError, match="ensemble_size must be 1"):
        methods.shape_for("dense", DEPTH, overrides={"ensemble_size": 3}, strict=False)


def test_a_shape_error_must_start_with_its_field() -> None:
    with pytest.raises(AssertionError, match="must start with its field"):
        methods.ShapeError("head_layers", "the heads are too deep")


def test_at_density_is_the_dense_form_at_density_one() -> None:
    neurotrails = methods.get("neurotrails")
    assert neurotrails.at_density(0.5) == "neurotrails"
    assert neurotrails.at_density(1.0) == "treenet"
    assert methods.get("treenet").at_density(1.0) == methods.get("treenet").at_density(0.5) == "treenet"


def test_an_unknown_method_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"method must be one of \('dense', 'treenet'.*got 'moe'"):
        methods.get("moe")
    with pytest.raises(ValueError, match="got 'moe'"):
        methods.unregister("moe")


def test_a_duplicate_name_is_refused() -> None:
    with pytest.raises(ValueError, match="method 'dense' is already registered"):
        methods.register(methods.Method("dense", "again", ensemble=False, shared_blocks=False, share_embeddings=True))
    assert methods.get("dense") is methods.DENSE


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "two words"}, "Method.name must be an identifier"),
        ({"ensemble": 1}, "Method.ensemble must be a bool"),
        ({"shared_blocks": True, "share_embeddings": False}, "needs shared_blocks=False"),
        ({"step_cost": 0}, "Method.step_cost must be a number > 0"),
        ({"dense_form": "treenet"}, "dense_form is the method at density 1, only for a sparse method"),
    ],
)
def test_a_bad_method_is_refused(fields, message) -> None:
    base = {"name": "bad", "summary": "", "ensemble": True, "shared_blocks": False, "share_embeddings": True}
    with pytest.raises(ValueError, match=message):
        methods.Method(**{**base, **fields})
    assert "bad" not in methods.names()


def test_a_dense_form_must_be_registered() -> None:
    method = methods.Method(
        "sparse_x", "", ensemble=True, shared_blocks=True, share_embeddings=True, sparse=True, dense_form="nothing"
    )
    with pytest.raises(ValueError, match="dense_form 'nothing' is not a registered method"):
        methods.register(method)
    assert "sparse_x" not in methods.names()


SHARED_EMBEDDING = methods.Method(
    "shared_embedding",
    "H whole-depth models sharing only the embedding",
    ensemble=True,
    shared_blocks=False,
    share_embeddings=True,
    step_cost=2.8,
)


@pytest.fixture
def shared_embedding() -> Iterator[methods.Method]:
    """The new method, registered for one test only."""
    methods.register(SHARED_EMBEDDING)
    try:
        yield SHARED_EMBEDDING
    finally:
        methods.unregister(SHARED_EMBEDDING.name)


def test_adding_a_method_touches_one_place(tmp_path: Path, shared_embedding: methods.Method) -> None:
    """The issue's done-when: one ``register`` call, and the size builder, the recipe and the trainer take it."""
    assert "shared_embedding" in methods.names()
    config = build_config("tiny", "shared_embedding", ensemble_size=2, head_layers=1)  # head_layers: fixed, dropped
    assert (config.ensemble_size, config.head_layers, config.num_shared_layers) == (2, 4, 0)
    assert config.share_embeddings
    with pytest.raises(ValueError, match="share_embeddings: method 'shared_embedding' sets share_embeddings=True"):
        build_config("tiny", "shared_embedding", share_embeddings=False)

    recipe = tiny_recipe(tmp_path, "dense", model={"method": "shared_embedding", "ensemble_size": 2})
    recipe["optim"] |= {"max_steps": 2}
    recipe["eval"] = {"every": 2}
    recipe["checkpoint"] = {"every": 2}
    result = train(recipe_from_dict(recipe))
    assert result.step == 2 and [p.name for p in complete_checkpoints(tmp_path / "run")] == ["step_2"]
    assert {"head0_ppl", "head1_ppl"} <= set(result.metrics)

    model = NeuroTrailsForCausalLM.from_pretrained(result.checkpoint / "model")
    c = model.config
    shape = (c.ensemble_size, c.head_layers, c.num_shared_layers, c.share_embeddings)
    assert shape == (2, c.num_hidden_layers, 0, True)
    names = [name for name, _ in model.named_parameters()]
    embeddings = [name for name in names if name.endswith("embed_tokens.weight")]
    assert len(embeddings) == 1 and not embeddings[0].startswith("heads.")  # one embedding, shared
    assert not any(name.startswith("backbone.") for name in names)  # no shared block
    for head in range(2):  # every head the whole depth, with its own LM head
        blocks = {name.split(".")[3] for name in names if name.startswith(f"heads.{head}.layers.")}
        assert len(blocks) == c.num_hidden_layers
        assert f"heads.{head}.lm_head.weight" in names
