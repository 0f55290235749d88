"""`source: hub`: local folders laid out like Hub dataset repos (jsonl, parquet, README configs), save_to_disk
folders, streaming or Arrow, a validation hold-out of train, pre-tokenized columns, C4 as a preset, and bad input
named by its field. Offline: a Hub id is only ever refused."""

from __future__ import annotations

import io
from itertools import islice
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from helpers.data import (
    data_settings,
    hub_config,
    hub_folder,
    make_docs,
    tiny_tokenizer,
    tiny_tokenizer_dir,
    write_records,
)
from helpers.training import tiny_recipe

from nt_llm.data import (
    DataConfig,
    HubSource,
    RowBuilder,
    build_document_stream,
    build_train_batches,
    build_validation_set,
)
from nt_llm.data.hub import ARROW_SHARDS
from nt_llm.train import load_recipe, recipe_from_dict, train
from nt_llm.train.recipe import save_recipe


def _epoch(cfg: DataConfig, split: str = "train", rank: int = 0, world_size: int = 1) -> list:
    stream = build_document_stream(cfg, split, rank, world_size)
    stream.repeat = False
    return list(stream)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_hub_layout_folder_reads_its_splits_shard_by_shard(tmp_path, fmt: str) -> None:
    train, val = hub_folder(tmp_path, n_files=4, docs_per_file=6, fmt=fmt)
    cfg = hub_config({"path": str(tmp_path)}, shuffle_buffer=0)
    assert _epoch(cfg) == [d for shard in train for d in shard]
    assert _epoch(cfg, "validation") == val, "the folder's validation split, not a hold-out"
    stream = build_document_stream(cfg, "train", rank=1, world_size=2)
    assert stream.shard_level and stream.num_shards == 4, "the files are the shards ranks split"
    assert _epoch(cfg, rank=1, world_size=2) == train[1] + train[3]


def test_streaming_and_arrow_loads_give_the_same_documents(tmp_path) -> None:
    hub_folder(tmp_path / "repo", n_files=3, docs_per_file=5)
    streamed = hub_config({"path": str(tmp_path / "repo")}, shuffle_buffer=0)
    arrow = hub_config({"path": str(tmp_path / "repo"), "streaming": False, "cache_dir": str(tmp_path / "cache")})
    arrow.shuffle_buffer = 0
    assert _epoch(arrow) == _epoch(streamed)
    assert build_document_stream(arrow, "train").num_shards == min(15, ARROW_SHARDS), "rows cut into shards"
    assert any((tmp_path / "cache").iterdir()), "the Arrow files went to cache_dir"


def test_readme_configs_are_chosen_by_name(tmp_path) -> None:
    for lang in ("en", "de"):
        for split in ("train", "validation"):
            docs = [f"{lang} {split} {i}" for i in range(4)]
            write_records(tmp_path / lang / f"{split}.jsonl", [{"text": d} for d in docs])
    configs = [
        {
            "config_name": lang,
            "data_files": [{"split": s, "path": f"{lang}/{s}.jsonl"} for s in ("train", "validation")],
        }
        for lang in ("en", "de")
    ]
    (tmp_path / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': configs})}---\n# a dataset\n")
    cfg = hub_config({"path": str(tmp_path), "name": "de"}, shuffle_buffer=0)
    assert _epoch(cfg) == [f"de train {i}" for i in range(4)]
    assert _epoch(cfg, "validation") == [f"de validation {i}" for i in range(4)]
    with pytest.raises(ValueError, match=r"DataConfig\.hub\.name: .* no config 'fr'; its configs are \['en', 'de'\]"):
        build_document_stream(hub_config({"path": str(tmp_path), "name": "fr"}), "train")


def test_save_to_disk_folders(tmp_path) -> None:
    train, val = make_docs(12), make_docs(5, seed=9, start=500)
    splits = {"train": datasets.Dataset.from_dict({"body": train}), "dev": datasets.Dataset.from_dict({"body": val})}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dict"))
    cfg = hub_config(
        {"path": str(tmp_path / "dict"), "text_field": "body", "validation_split": "dev"}, shuffle_buffer=0
    )
    assert _epoch(cfg) == train and _epoch(cfg, "validation") == val
    # One saved Dataset is the train split, and without a validation split validation is held out of it.
    splits["train"].save_to_disk(str(tmp_path / "one"))
    one = hub_config({"path": str(tmp_path / "one"), "text_field": "body", "holdout_documents": 3}, shuffle_buffer=0)
    assert _epoch(one, "validation") == train[:3] and _epoch(one) == train[3:]
    with pytest.raises(ValueError, match=r"DataConfig\.hub\.name: .*save_to_disk"):
        build_document_stream(hub_config({"path": str(tmp_path / "one"), "name": "en"}), "train")
    with pytest.raises(ValueError, match=r"DataConfig\.hub\.validation_split: .* no split 'validation'.*'dev'"):
        build_document_stream(
            hub_config({"path": str(tmp_path / "dict"), "validation_split": "validation"}), "validation"
        )


@pytest.mark.parametrize(
    ("holdout", "held"),
    [({"holdout_documents": 13}, 13), ({"holdout_documents": 10}, 10), ({"holdout_fraction": 0.25}, 7)],
)
def test_the_holdout_is_the_first_records_of_train_and_training_skips_them(tmp_path, holdout, held: int) -> None:
    train, _ = hub_folder(tmp_path, n_files=3, docs_per_file=10, n_val=None)  # 30 records; 13 spans two files
    everything = [d for shard in train for d in shard]
    cfg = hub_config({"path": str(tmp_path), **holdout}, shuffle_buffer=4)
    assert _epoch(cfg, "validation") == everything[:held], "in order, from the first file on"
    trained = _epoch(cfg)
    assert sorted(trained) == sorted(everything[held:]), "shuffled, without the held-out records"
    ranks = [_epoch(cfg, rank=r, world_size=3) for r in range(3)]
    assert sorted(ranks[0] + ranks[1] + ranks[2]) == sorted(everything[held:])
    assert all(ranks), "a file held out whole is left out of the files ranks split, not dealt to one of them"
    tok = tiny_tokenizer()
    assert build_validation_set(cfg, tok).num_tokens == 200, "the budget is met from the held-out records"


def test_without_a_validation_split_1000_records_are_held_out(tmp_path) -> None:
    hub_folder(tmp_path / "small", n_files=2, docs_per_file=10, n_val=None)
    with pytest.raises(ValueError, match=r"DataConfig\.hub\.holdout_documents \(default 1000.*leaves nothing"):
        build_document_stream(hub_config({"path": str(tmp_path / "small")}), "train")
    docs = [f"document {i}" for i in range(1003)]
    write_records(tmp_path / "big" / "train.jsonl", [{"text": d} for d in docs])
    cfg = hub_config({"path": str(tmp_path / "big")}, shuffle_buffer=0)
    assert _epoch(cfg, "validation") == docs[:1000] and _epoch(cfg) == docs[1000:]


def test_resume_with_a_holdout_continues_exactly(tmp_path) -> None:
    hub_folder(tmp_path, n_files=3, docs_per_file=9, n_val=None)
    cfg = hub_config({"path": str(tmp_path), "holdout_documents": 4}, batch_size=2, shuffle_buffer=5)
    tok = tiny_tokenizer()
    run = build_train_batches(cfg, tok)
    it = iter(run)
    for _ in range(20):  # past the first epoch
        next(it)
    buffer = io.BytesIO()
    torch.save(run.state_dict(), buffer)
    expected = [next(it)["input_ids"] for _ in range(10)]
    resumed = build_train_batches(cfg, tok)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert all(torch.equal(e, g["input_ids"]) for e, g in zip(expected, islice(iter(resumed), 10), strict=True))
    other = hub_config({"path": str(tmp_path), "holdout_documents": 5}, batch_size=2, shuffle_buffer=5)
    with pytest.raises(ValueError, match="same layout"):
        build_train_batches(other, tok).load_state_dict(run.state_dict())


@pytest.mark.parametrize("mode", ["pack", "pad"])
def test_pre_tokenized_documents_skip_the_tokenizer(tmp_path, mode: str) -> None:
    tok = tiny_tokenizer()
    texts = make_docs(10)
    ids = [tok(t)["input_ids"][1:] for t in texts]  # as a pre-tokenized corpus often is: no BOS
    write_records(tmp_path / "train.parquet", [{"input_ids": i, "text": "not used"} for i in ids])
    hub = {"path": str(tmp_path), "token_field": "input_ids", "holdout_documents": 2}
    cfg = hub_config(hub, shuffle_buffer=0, mode=mode)
    stream = build_document_stream(cfg, "train")
    stream.repeat = False
    rows = list(RowBuilder(stream, tok, 16, mode))
    if mode == "pack":
        packed = [t for r in rows for t in r.ids[: r.n_real]]
        assert packed == [t for doc in ids[2:] for t in doc + [tok.eos_token_id]], "as given, EOS after each"
    else:
        assert [r.ids[: r.n_real] for r in rows] == [doc[:16] for doc in ids[2:]]
        assert any(len(doc) > 16 for doc in ids[2:]) and any(len(doc) < 16 for doc in ids[2:])
    per_doc = [len(d) + 1 if mode == "pack" else min(len(d), 16) for d in ids[:2]]
    assert build_validation_set(cfg, tok).num_tokens == sum(per_doc)


def test_pre_tokenized_ids_outside_the_vocabulary_and_text_columns_are_named(tmp_path) -> None:
    write_records(tmp_path / "train.jsonl", [{"ids": [5, 6, 4000], "text": "a b"}] * 3)
    cfg = hub_config({"path": str(tmp_path), "token_field": "ids", "holdout_documents": 1})
    with pytest.raises(ValueError, match=r"hub/train: token id 4000 is outside the tokenizer's \d+ ids"):
        next(iter(build_train_batches(cfg, tiny_tokenizer())))
    with pytest.raises(ValueError, match=r"DataConfig\.hub\.token_field='text' holds text, not token ids"):
        build_document_stream(
            hub_config({"path": str(tmp_path), "token_field": "text", "holdout_documents": 1}), "train"
        )
    with pytest.raises(ValueError, match=r"DataConfig\.hub\.text_field='ids' holds .*not text.*token_field"):
        build_document_stream(hub_config({"path": str(tmp_path), "text_field": "ids", "holdout_documents": 1}), "train")


def test_bad_sources_are_named_by_their_field(tmp_path) -> None:
    hub_folder(tmp_path / "repo", n_files=1, docs_per_file=4)
    repo = str(tmp_path / "repo")
    cases = [
        ({"path": str(tmp_path / "missing")}, FileNotFoundError, r"DataConfig\.hub\.path: no folder .*missing"),
        ({"path": "./missing/corpus"}, FileNotFoundError, r"DataConfig\.hub\.path: no folder \./missing/corpus"),
        ({"path": str(tmp_path / "repo" / "data" / "train-00000-of-00001.jsonl")}, ValueError, r"hub\.path: .* a file"),
        ({"path": repo, "text_field": "body"}, KeyError, r"DataConfig\.hub\.text_field='body' is not a column .*'id'"),
        ({"path": repo, "train_split": "trian"}, ValueError, r"DataConfig\.hub\.train_split: .* no split 'trian'"),
        ({"path": repo, "revision": "main"}, ValueError, r"DataConfig\.hub\.revision: .* local folder"),
        # Offline (tests/conftest.py), a Hub id fails at once, with the setting that named it.
        ({"path": "someone/corpus"}, OSError, r"DataConfig\.hub\.path='someone/corpus'.*Hub"),
    ]
    for hub, error, message in cases:
        with pytest.raises(error, match=message):
            build_document_stream(hub_config(hub), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"DataConfig\.hub\.path='.*empty'.*doesn't contain any data files"):
        build_document_stream(hub_config({"path": str(tmp_path / "empty")}), "train")


def test_config_errors_name_the_field() -> None:
    settings = data_settings()
    cases = [
        (dict(source="hub"), r"DataConfig\.hub: source='hub' needs hub"),
        (dict(hub={"path": "x/y"}), r"DataConfig\.hub is set but DataConfig\.source is 'embedded'"),
        (dict(source="hub", hub={"path": ""}), r"DataConfig\.hub\.path must be non-empty"),
        (dict(source="hub", hub={"path": "x/y", "split": "train"}), r"unknown key\(s\) \['DataConfig\.hub\.split'\]"),
        (
            dict(source="hub", hub={"path": "x/y", "streaming": "maybe"}),
            r"DataConfig\.hub\.streaming: expected true or",
        ),
        (
            dict(source="hub", hub={"path": "x/y", "holdout_documents": 0}),
            r"DataConfig\.hub\.holdout_documents must be",
        ),
        (
            dict(source="hub", hub={"path": "x/y", "holdout_fraction": 1.5}),
            r"DataConfig\.hub\.holdout_fraction must be",
        ),
        (
            dict(source="hub", hub={"path": "x/y", "holdout_documents": 5, "holdout_fraction": 0.1}),
            r"holdout_documents and DataConfig\.hub\.holdout_fraction: set one",
        ),
        (
            dict(source="hub", hub={"path": "x/y", "validation_split": "test", "holdout_documents": 5}),
            r"DataConfig\.hub\.validation_split \('test'\) and a hold-out",
        ),
        (dict(source="hub", hub={"path": "x/y", "validation_split": "train"}), r"validation_split must differ"),
        (dict(source="hub", hub="x/y"), r"DataConfig\.hub must be a mapping"),
    ]
    for values, message in cases:
        with pytest.raises(ValueError, match=message):
            DataConfig(**{**settings, **values})
    cfg = DataConfig(**{**settings, "source": "hub", "hub": {"path": "x/y", "name": 2024, "holdout_documents": 1e3}})
    assert (cfg.hub.name, cfg.hub.holdout_documents) == ("2024", 1000), "YAML numbers where the field wants text/int"
    assert DataConfig(**{**settings, "source": "hub", "hub": HubSource(path="x/y")}).hub == HubSource(path="x/y")


def test_c4_is_a_preset_of_hub_and_its_recipes_still_load(tmp_path, monkeypatch) -> None:
    """`source: c4` opens allenai/c4 en as a streamed Hub source with its validation split (the Hub answered by
    local shards); the paper's recipe and a saved `source: c4` recipe load as before."""
    train, _ = hub_folder(tmp_path, n_files=2, docs_per_file=4)
    calls = []
    real_load = datasets.load_dataset

    def fake_load(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return real_load(str(tmp_path), split=kwargs["split"], streaming=kwargs["streaming"])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = DataConfig(**data_settings(source="c4", shuffle_buffer=0))
    assert _epoch(cfg) == train[0] + train[1]
    _epoch(cfg, "validation")
    assert calls == [("allenai/c4", "en", {"split": s, "streaming": True}) for s in ("train", "validation")]

    repo = Path(__file__).resolve().parents[1]
    paper = yaml.safe_load((repo / "recipes" / "data" / "c4_paper.yaml").read_text())
    assert (paper["source"], paper["c4_path"], paper["c4_name"], paper["mode"]) == ("c4", "allenai/c4", "en", "pad")
    saved = tiny_recipe(tmp_path, "dense", data={"source": "c4", "c4_path": "allenai/c4", "c4_name": "en"})
    assert recipe_from_dict(saved).data.source == "c4"


def test_recipe_files_and_dotlist_overrides_reach_the_sources(tmp_path) -> None:
    hub_folder(tmp_path / "web", n_files=1, docs_per_file=4)
    data = {
        "source": "mix",
        "tokenizer": tiny_tokenizer_dir(),
        "seq_len": 16,
        "mix": {"web": {"path": str(tmp_path / "web"), "weight": 3}, "code": {"path": "org/code", "weight": 1}},
    }
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"method": "dense"}, "data": data}))
    loaded = load_recipe(
        recipe, ["data.mix.web.weight=0.5", "data.mix.code.revision=2024", "data.mix.code.streaming=no"]
    )
    web, code = loaded.data.mix["web"], loaded.data.mix["code"]
    assert (web.weight, code.weight, code.revision, code.streaming) == (0.5, 1.0, "2024", False)
    save_recipe(loaded, tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml").data == loaded.data, "the resolved recipe reads back the same"

    hub = {"source": "hub", "hub": {"path": str(tmp_path / "web")}, "tokenizer": tiny_tokenizer_dir()}
    recipe.write_text(yaml.safe_dump({"model": {"method": "dense"}, "data": hub}))
    assert load_recipe(recipe, ["data.hub.text_field=body"]).data.hub.text_field == "body"
    with pytest.raises(ValueError, match=r"DataConfig\.mix\.web\.weight must be > 0"):
        load_recipe(tmp_path / "saved.yaml", ["data.mix.web.weight=-1"])


def test_training_on_a_hub_source(tmp_path) -> None:
    hub_folder(tmp_path / "repo", n_files=2, docs_per_file=40, fmt="parquet", n_val=None)
    recipe = tiny_recipe(tmp_path, "dense", optim={"max_steps": 3}, eval={"every": 3}, checkpoint={"every": 3})
    recipe["data"] = data_settings(source="hub", hub={"path": str(tmp_path / "repo"), "holdout_documents": 10})
    result = train(recipe_from_dict(recipe))
    assert result.step == 3 and 1 < result.metrics["ensemble_ppl"] < 1000
    saved = yaml.safe_load((result.checkpoint / "recipe.yaml").read_text())["data"]
    assert saved["source"] == "hub" and saved["hub"]["holdout_documents"] == 10
