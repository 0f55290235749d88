"""Packing, the paper's pad/truncate, determinism, exact resume, file formats and bad data."""

from __future__ import annotations

import io
from itertools import islice
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers.data import corpus, files_config, make_docs, tiny_tokenizer, tiny_tokenizer_dir, write_jsonl
from transformers import AutoTokenizer

from nt_llm.data import (
    DataConfig,
    PrefetchedBatches,
    RowBuilder,
    build_document_stream,
    build_tokenizer,
    build_train_batches,
    real_token_fraction,
)
from nt_llm.data.tokenizer import ensure_special_tokens


def _one_epoch(cfg: DataConfig) -> list[str]:
    stream = build_document_stream(cfg, "train")
    stream.repeat = False
    return list(stream)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="DataConfig.mode"):
        DataConfig(mode="packed")
    with pytest.raises(ValueError, match="DataConfig.seq_len"):
        DataConfig(seq_len=1)
    with pytest.raises(ValueError, match="DataConfig.train_files"):
        DataConfig(source="files")
    with pytest.raises(ValueError, match="DataConfig.shuffle_buffer"):
        DataConfig(shuffle_buffer=-1)
    with pytest.raises(ValueError, match="DataConfig.source"):
        DataConfig(source="pile")
    with pytest.raises(ValueError, match="DataConfig.prefetch"):
        DataConfig(prefetch=-1)
    with pytest.raises(ValueError, match="DataConfig.file_format"):
        DataConfig(file_format="csv")
    with pytest.raises(ValueError, match="DataConfig.seed"):
        DataConfig(seed="0")
    assert DataConfig(source="files", train_files="a/*.jsonl", validation_files="b.jsonl").train_files == ["a/*.jsonl"]


def test_seed_none_is_the_runs_seed_and_reads_0_standalone(tmp_path) -> None:
    """A recipe fills seed=None from run.seed; a DataConfig used on its own streams as with seed 0."""
    corpus(tmp_path, n_files=3, docs_per_file=6)
    assert DataConfig().seed is None
    unset, zero = files_config(tmp_path, seed=None), files_config(tmp_path, seed=0)
    assert (unset.stream_seed, files_config(tmp_path, seed=7).stream_seed) == (0, 7)
    assert _one_epoch(unset) == _one_epoch(zero)
    assert build_document_stream(unset, "train").state_dict() == build_document_stream(zero, "train").state_dict()


def test_packing_loses_no_token_and_joins_documents_with_eos(tmp_path) -> None:
    corpus(tmp_path, n_files=2, docs_per_file=15)
    cfg = files_config(tmp_path, shuffle_buffer=0, seq_len=16)
    tok = tiny_tokenizer()
    docs = _one_epoch(cfg)
    stream = build_document_stream(cfg, "train")
    stream.repeat = False
    rows = list(RowBuilder(stream, tok, cfg.seq_len, "pack", tokenize_batch=4))

    expected = []
    for doc in docs:
        # Each document as the tokenizer encodes it (BOS first for this LLaMA-format one), then EOS.
        expected += tok(doc)["input_ids"] + [tok.eos_token_id]
    packed = [t for r in rows for t in r.ids[: r.n_real]]
    assert expected[0] == tok.bos_token_id
    assert packed == expected
    assert all(r.n_real == cfg.seq_len for r in rows[:-1]), "only the end of a finite stream may be short"
    eos_at = [i for i, t in enumerate(packed) if t == tok.eos_token_id]
    assert len(eos_at) == len(docs), "EOS appears exactly once per document"
    assert all(packed[i + 1] == tok.bos_token_id for i in eos_at[:-1]), "and the next document starts right after"


def test_pad_mode_matches_the_tokenizers_own_truncation(tmp_path) -> None:
    corpus(tmp_path, n_files=1, docs_per_file=12)
    cfg = files_config(tmp_path, shuffle_buffer=0, mode="pad", seq_len=32, batch_size=3)
    tok = tiny_tokenizer()
    docs = _one_epoch(cfg)
    batches = list(islice(iter(build_train_batches(cfg, tok)), 4))
    lengths = []
    for b, batch in enumerate(batches):
        for i in range(cfg.batch_size):
            ref = tok(docs[b * cfg.batch_size + i], truncation=True, max_length=cfg.seq_len, padding="max_length")
            assert batch["input_ids"][i].tolist() == ref["input_ids"]
            assert batch["attention_mask"][i].tolist() == ref["attention_mask"]
            mask = torch.tensor(ref["attention_mask"]).bool()
            assert (batch["labels"][i][~mask] == -100).all()
            assert batch["labels"][i][mask].tolist() == batch["input_ids"][i][mask].tolist()
            lengths.append(sum(ref["attention_mask"]))
    assert min(lengths) < cfg.seq_len == max(lengths), "fixture must cover both padded and truncated documents"
    fraction = sum(lengths) / (len(lengths) * cfg.seq_len)
    assert sum(real_token_fraction(b) for b in batches) / len(batches) == pytest.approx(fraction)
    assert fraction < 1.0


def test_batches_have_the_promised_shape_and_packing_has_no_padding(tmp_path) -> None:
    corpus(tmp_path, n_files=2, docs_per_file=10)
    cfg = files_config(tmp_path, seq_len=16, batch_size=4)
    batches = build_train_batches(cfg, build_tokenizer(cfg))
    for batch in islice(iter(batches), 30):  # several epochs of this small corpus
        assert set(batch) == {"input_ids", "labels", "attention_mask"}
        for value in batch.values():
            assert value.dtype == torch.long and value.shape == (4, 16)
        assert real_token_fraction(batch) == 1.0
        assert torch.equal(batch["labels"], batch["input_ids"])
    assert batches.stats()["real_token_fraction"] == 1.0
    assert batches.stats()["batches"] == 30


def test_same_seed_same_batches_other_seed_other_order(tmp_path) -> None:
    corpus(tmp_path, n_files=3, docs_per_file=10)
    tok = tiny_tokenizer()

    def first(seed: int) -> list[torch.Tensor]:
        return [b["input_ids"] for b in islice(iter(build_train_batches(files_config(tmp_path, seed=seed), tok)), 6)]

    a, b, c = first(0), first(0), first(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("mode", ["pack", "pad"])
@pytest.mark.parametrize("k", [1, 7, 23])
@pytest.mark.parametrize(("rank", "world_size"), [(0, 1), (1, 2), (2, 4)])
@pytest.mark.parametrize("prefetch", [0, 3])
def test_resume_after_k_batches_gives_the_same_next_batches(
    tmp_path, mode: str, k: int, rank: int, world_size: int, prefetch: int
) -> None:
    # 3 files x 9 docs, buffer 5: k=23 is past the first epoch, so epochs, shard order and the drain all
    # resume; world size 2 splits files, 4 strides over documents; prefetching runs ahead of the consumer.
    corpus(tmp_path, n_files=3, docs_per_file=9)
    cfg = files_config(tmp_path, mode=mode, shuffle_buffer=5, seq_len=16, batch_size=2, prefetch=prefetch)
    tok = tiny_tokenizer()
    run = build_train_batches(cfg, tok, rank, world_size)
    it = iter(run)
    for _ in range(k):
        next(it)
    buffer = io.BytesIO()
    torch.save(run.state_dict(), buffer)  # must survive a checkpoint, with torch's safe loader
    expected = [next(it) for _ in range(12)]

    resumed = build_train_batches(cfg, tok, rank, world_size)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    got = list(islice(iter(resumed), 12))
    for e, g in zip(expected, got, strict=True):
        for key in e:
            assert torch.equal(e[key], g[key]), key
    assert resumed.stats() == run.stats()
    assert run.stats()["batches"] == k + 12


def test_prefetching_yields_the_plain_pipelines_batches_and_rewinds_on_close(tmp_path) -> None:
    corpus(tmp_path, n_files=2, docs_per_file=8)
    tok = tiny_tokenizer()
    plain = list(islice(iter(build_train_batches(files_config(tmp_path, prefetch=0), tok)), 20))
    ahead = build_train_batches(files_config(tmp_path, prefetch=4), tok)
    assert isinstance(ahead, PrefetchedBatches)
    assert ahead.batches.rows.tokenizer is not tok, "the producer thread must not share the caller's tokenizer"
    first = list(islice(iter(ahead), 8))
    ahead.close()  # the producer had made batches 9.. already: they must come again
    rest = list(islice(iter(ahead), 12))
    ahead.close()
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(plain, first + rest, strict=True))
    assert ahead.stats()["batches"] == 20


def test_prefetching_reraises_pipeline_errors(tmp_path) -> None:
    write_jsonl(tmp_path / "train-00.jsonl", make_docs(3), field="content")
    batches = build_train_batches(files_config(tmp_path, prefetch=2), tiny_tokenizer())
    with pytest.raises(KeyError, match="'text'"):
        next(iter(batches))


def test_resume_refuses_a_different_sharding(tmp_path) -> None:
    corpus(tmp_path, n_files=4, docs_per_file=5)
    cfg = files_config(tmp_path)
    tok = tiny_tokenizer()
    state = build_train_batches(cfg, tok, rank=0, world_size=2).state_dict()
    with pytest.raises(ValueError, match="same layout"):
        build_train_batches(cfg, tok, rank=0, world_size=1).load_state_dict(state)


@pytest.mark.parametrize("fmt", ["jsonl.gz", "parquet", "arrow", "txt"])
def test_local_file_formats(tmp_path, fmt: str) -> None:
    docs = make_docs(12)
    path = tmp_path / f"part.{fmt}"
    if fmt == "jsonl.gz":
        write_jsonl(path, docs, field="body")
    elif fmt == "parquet":
        pq.write_table(pa.table({"body": docs}), path)
    elif fmt == "arrow":
        table = pa.table({"body": docs})
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    cfg = files_config(tmp_path, train_files=[str(path)], text_field="body", shuffle_buffer=0)
    assert [d.strip() for d in _one_epoch(cfg)] == docs


def test_missing_files_are_named(tmp_path) -> None:
    cfg = files_config(tmp_path, train_files=[str(tmp_path / "nothing-*.jsonl")])
    with pytest.raises(FileNotFoundError, match="nothing-"):
        build_train_batches(cfg, tiny_tokenizer())
    with pytest.raises(FileNotFoundError, match="prepare"):
        build_train_batches(DataConfig(source="embedded", data_dir=str(tmp_path)), tiny_tokenizer())


def test_empty_corpus_is_an_error(tmp_path) -> None:
    write_jsonl(tmp_path / "train-00.jsonl", ["   ", ""])
    cfg = files_config(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        next(iter(build_train_batches(cfg, tiny_tokenizer())))


def test_empty_files_are_named(tmp_path) -> None:
    (tmp_path / "train-00.jsonl").write_bytes(b"")
    cfg = files_config(tmp_path)
    with pytest.raises(ValueError, match=rf"DataConfig\.train_files: {tmp_path / 'train-00.jsonl'} is empty"):
        build_train_batches(cfg, tiny_tokenizer())
    (tmp_path / "train-01.txt").write_bytes(b"")
    cfg = files_config(tmp_path, train_files=[str(tmp_path / "train-*")], file_format="text")
    with pytest.raises(ValueError, match=r"DataConfig\.train_files: the 2 files .*train-00\.jsonl.* are all empty"):
        build_train_batches(cfg, tiny_tokenizer())
    write_jsonl(tmp_path / "train-02.jsonl", make_docs(3))  # an empty shard among others is read as no documents
    cfg = files_config(tmp_path, train_files=[str(tmp_path / "train-*.jsonl")], shuffle_buffer=0)
    assert len(_one_epoch(cfg)) == 3


def test_missing_text_field_names_it_and_the_columns(tmp_path) -> None:
    write_jsonl(tmp_path / "train-00.jsonl", make_docs(3), field="content")
    cfg = files_config(tmp_path)
    with pytest.raises(KeyError, match=r"'text'.*content"):
        next(iter(build_train_batches(cfg, tiny_tokenizer())))


def test_undecodable_documents_are_skipped_and_counted(tmp_path) -> None:
    docs = make_docs(6)
    good = write_jsonl(tmp_path / "train-00.jsonl", docs).read_bytes().splitlines(keepends=True)
    bad = b'{"text": "broken \xff\xfe bytes", "id": 99}\n'
    (tmp_path / "train-00.jsonl").write_bytes(b"".join(good[:3]) + bad + b"".join(good[3:]))
    (tmp_path / "train-01.txt").write_bytes(b"fine paragraph\n\nbad \xff paragraph\n")
    cfg = files_config(tmp_path, shuffle_buffer=0)
    stream = build_document_stream(cfg, "train")
    stream.repeat = False
    assert list(stream) == docs
    assert stream.counters.skipped_undecodable == 1
    text_cfg = files_config(tmp_path, train_files=[str(tmp_path / "train-01.txt")], shuffle_buffer=0)
    text_stream = build_document_stream(text_cfg, "train")
    text_stream.repeat = False
    assert [d.strip() for d in text_stream] == ["fine paragraph"]
    assert text_stream.counters.skipped_undecodable == 1


def test_c4_goes_through_hub_streaming(tmp_path, monkeypatch) -> None:
    """The C4 branch, with the Hub call answered by the same json streaming builder over local shards."""
    train, _ = corpus(tmp_path, n_files=4, docs_per_file=5)
    calls = []
    real_load = datasets.load_dataset

    def fake_load(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        files = sorted(str(p) for p in tmp_path.glob("train-*.jsonl"))
        return real_load("json", data_files=files, split="train", streaming=kwargs["streaming"])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = files_config(tmp_path, source="c4", shuffle_buffer=0)
    stream = build_document_stream(cfg, "train", rank=1, world_size=2)
    stream.repeat = False
    got = list(stream)
    assert calls == [("allenai/c4", "en", {"split": "train", "streaming": True})]
    assert stream.shard_level and stream.num_shards == 4
    assert got == train[1] + train[3]


def test_data_recipes_are_valid_configs() -> None:
    import yaml

    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes" / "data").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"embedded", "c4_paper", "c4_packed"}
    configs = {p.stem: DataConfig(**yaml.safe_load(p.read_text())) for p in recipes}
    paper = configs["c4_paper"]
    assert (paper.source, paper.tokenizer, paper.seq_len, paper.mode, paper.validation_tokens) == (
        "c4",
        "t5-base",
        256,
        "pad",
        10_000_000,
    )
    assert configs["embedded"].mode == "pack"


def test_packing_does_not_double_the_eos_of_tokenizers_that_append_one(tmp_path) -> None:
    """T5-style tokenizers end every encoding with EOS already: packing must not add a second one."""
    corpus(tmp_path, n_files=1, docs_per_file=10)
    cfg = files_config(tmp_path, shuffle_buffer=0)
    tok = ensure_special_tokens(AutoTokenizer.from_pretrained(tiny_tokenizer_dir(), add_eos_token=True))
    assert tok("the market")["input_ids"][-1] == tok.eos_token_id
    docs = _one_epoch(cfg)
    stream = build_document_stream(cfg, "train")
    stream.repeat = False
    packed = [t for r in RowBuilder(stream, tok, cfg.seq_len, "pack") for t in r.ids[: r.n_real]]
    assert packed == [t for doc in docs for t in tok(doc)["input_ids"]]
    assert packed.count(tok.eos_token_id) == len(docs)
