"""`source: mix`: weighted mixes of Hub sources, deterministic for a seed, in proportion, resumable exactly (also
through prefetching and across ranks), a fixed validation mix, and bad mixes named by their field."""

from __future__ import annotations

import io
import re
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import torch
from helpers.data import hub_config, hub_folder, make_docs, mix_config, tiny_tokenizer, write_records
from helpers.training import reset_accelerate, tiny_recipe

from nt_llm.data import MixedStream, build_document_stream, build_train_batches, build_validation_set
from nt_llm.train import recipe_from_dict, train
from nt_llm.train.metrics import read_metrics

WEB, CODE = 0, 10_000  # the first document index of each source: "Doc 10003: ..." came from code


def _sources(tmp_path: Path, n_val: int | None = 20) -> dict[str, dict[str, object]]:
    hub_folder(tmp_path / "web", n_files=3, docs_per_file=20, start=WEB, n_val=n_val)
    hub_folder(tmp_path / "code", n_files=2, docs_per_file=10, start=CODE, n_val=n_val)
    return {"web": {"path": str(tmp_path / "web"), "weight": 3}, "code": {"path": str(tmp_path / "code")}}


def _origin(doc: str) -> str:
    index = int(re.match(r"Doc (\d+):", doc).group(1)) % 100_000
    return "code" if index >= CODE else "web"


def test_a_mix_is_deterministic_for_a_seed_and_in_proportion(tmp_path) -> None:
    mix = _sources(tmp_path)

    def draws(seed: int, n: int = 800) -> list[str]:
        return list(islice(build_document_stream(mix_config(mix, seed=seed), "train"), n))

    first = draws(0)
    assert first == draws(0)
    assert first != draws(1)
    share = Counter(map(_origin, first))["web"] / len(first)
    assert share == pytest.approx(0.75, abs=0.05), "weight 3 against 1 (the default)"
    # Each source repeats on its own: the small one (20 documents) is drawn ~200 times without running out.
    assert len({d for d in first if _origin(d) == "code"}) == 20


@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize(("rank", "world_size"), [(0, 1), (1, 2)])
def test_resume_of_a_mix_gives_the_same_next_batches(tmp_path, prefetch: int, rank: int, world_size: int) -> None:
    cfg = mix_config(_sources(tmp_path), batch_size=2, shuffle_buffer=5, prefetch=prefetch)
    tok = tiny_tokenizer()
    run = build_train_batches(cfg, tok, rank, world_size)
    it = iter(run)
    for _ in range(40):  # past an epoch of the small source on every rank
        next(it)
    buffer = io.BytesIO()
    torch.save(run.state_dict(), buffer)  # as a checkpoint holds it, read back with torch's safe loader
    expected = [next(it) for _ in range(15)]
    resumed = build_train_batches(cfg, tok, rank, world_size)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    got = list(islice(iter(resumed), 15))
    assert all(torch.equal(e["input_ids"], g["input_ids"]) for e, g in zip(expected, got, strict=True))
    stats = resumed.stats()
    assert stats == run.stats() and stats["documents_web"] + stats["documents_code"] == stats["documents"]


def test_ranks_of_a_mix_read_disjoint_documents(tmp_path) -> None:
    cfg = mix_config(_sources(tmp_path))
    # Within an epoch (web: 2 files on rank 0, 1 on rank 1; code: 1 file each); later epochs deal the files anew.
    per_rank = [list(islice(build_document_stream(cfg, "train", r, 2), 12)) for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert all({_origin(d) for d in docs} == {"web", "code"} for docs in per_rank)


def test_resume_refuses_another_mix(tmp_path) -> None:
    mix = _sources(tmp_path)
    tok = tiny_tokenizer()
    state = build_train_batches(mix_config(mix, prefetch=0), tok).state_dict()
    reweighted = {**mix, "code": {**mix["code"], "weight": 2}}
    with pytest.raises(ValueError, match="exact resume needs the same mix"):
        build_train_batches(mix_config(reweighted, prefetch=0), tok).load_state_dict(state)
    single = build_train_batches(hub_config({"path": mix["web"]["path"]}, prefetch=0), tok)
    with pytest.raises(ValueError, match="same layout"):
        single.load_state_dict(state)
    with pytest.raises(ValueError, match="saved by a single source, not by a mix"):
        build_train_batches(mix_config(mix, prefetch=0), tok).load_state_dict(single.state_dict())


def test_validation_of_a_mix_is_a_fixed_weighted_round_robin(tmp_path) -> None:
    mix = _sources(tmp_path, n_val=8)
    stream = build_document_stream(mix_config(mix, seed=0), "validation")
    assert isinstance(stream, MixedStream)
    docs = list(stream)
    assert docs == list(build_document_stream(mix_config(mix, seed=5), "validation")), "the same for every seed"
    # web 3 : code 1 while both last, then the rest of web once code's 8 documents are used up.
    assert [_origin(d) for d in docs[:8]] == ["web", "web", "web", "code"] * 2
    assert Counter(map(_origin, docs)) == {"web": 8, "code": 8}
    tok = tiny_tokenizer()
    assert build_validation_set(mix_config(mix), tok).num_tokens == 200


def test_a_mix_of_text_and_pre_tokenized_sources(tmp_path) -> None:
    tok = tiny_tokenizer()
    ids = [tok(d)["input_ids"] for d in make_docs(12, seed=3)]
    write_records(tmp_path / "tokens" / "train.parquet", [{"ids": i} for i in ids])
    hub_folder(tmp_path / "text", n_files=1, docs_per_file=12)
    mix = {
        "text": {"path": str(tmp_path / "text")},
        "tokens": {"path": str(tmp_path / "tokens"), "token_field": "ids", "holdout_documents": 2},
    }
    docs = list(islice(build_document_stream(mix_config(mix), "train"), 200))
    assert {type(d) for d in docs} == {str, list}
    assert {tuple(d) for d in docs if isinstance(d, list)} == {tuple(i) for i in ids[2:]}
    batch = next(iter(build_train_batches(mix_config(mix), tok)))
    assert batch["input_ids"].shape == (4, 16)


def test_bad_mixes_are_named_by_their_field(tmp_path) -> None:
    good = {"path": "org/web"}
    cases = [
        ({}, r"DataConfig\.mix: source='mix' needs a mapping"),
        ([{"path": "org/web", "weight": 1}], r"DataConfig\.mix: source='mix' needs a mapping"),
        ({"web": {**good, "weight": -0.5}}, r"DataConfig\.mix\.web\.weight must be > 0"),
        ({"web": good, "code": {"path": "org/code", "weight": 0}}, r"DataConfig\.mix\.code\.weight must be > 0"),
        ({"web": {**good, "weight": "a lot"}}, r"DataConfig\.mix\.web\.weight: expected a finite number"),
        ({"web": {**good, "weight": float("nan")}}, r"DataConfig\.mix\.web\.weight: expected a finite number"),
        ({"web": {**good, "wieght": 2}}, r"unknown key\(s\) \['DataConfig\.mix\.web\.wieght'\]"),
        ({"web": {"weight": 1}}, r"DataConfig\.mix\.web\.path must be non-empty"),
        ({"a/b": good}, r"DataConfig\.mix: source names must be non-empty strings without '/'"),
    ]
    for mix, message in cases:
        with pytest.raises(ValueError, match=message):
            mix_config(mix)
    with pytest.raises(FileNotFoundError, match=r"DataConfig\.mix\.code\.path: no folder"):
        build_document_stream(mix_config({"code": {"path": str(tmp_path / "nowhere")}}), "train")


def test_training_on_a_mix_resumes_exactly(tmp_path) -> None:
    mix = _sources(tmp_path / "data")
    recipe = tiny_recipe(tmp_path, "dense", optim={"max_steps": 4}, eval={"every": 4}, checkpoint={"every": 2})
    recipe["data"] = {**recipe["data"], "source": "mix", "mix": mix}
    straight = train(recipe_from_dict(recipe))
    reset_accelerate()
    resumed_recipe = {**recipe, "run": {**recipe["run"], "output_dir": str(tmp_path / "resumed")}}
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    (straight.output_dir / "checkpoints" / "step_2").rename(tmp_path / "resumed" / "checkpoints" / "step_2")
    resumed = train(recipe_from_dict(resumed_recipe), resume="latest")

    def losses(run: Path) -> dict[int, float]:
        return {e["step"]: e["loss"] for e in read_metrics(run / "metrics.jsonl") if e["event"] == "train"}

    assert {s: v for s, v in losses(straight.output_dir).items() if s > 2} == losses(resumed.output_dir)
    assert sorted(losses(resumed.output_dir)) == [3, 4]
