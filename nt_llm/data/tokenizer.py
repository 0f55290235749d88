"""Tokenizers: the embedded LLaMA-format SentencePiece default, a Hub id (t5-base) or a local folder.

Whatever the source, the result is a `transformers` tokenizer that `AutoTokenizer.from_pretrained`
reloads from a folder, because training, export and lm-eval all consume that folder.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, LlamaTokenizer, PreTrainedTokenizerBase

from .config import EMBEDDED_SMALL_TOKENIZER, EMBEDDED_TOKENIZER, DataConfig

logger = logging.getLogger(__name__)

TOKENIZER_SUBDIR = "tokenizer"
SMALL_TOKENIZER_SUBDIR = "tokenizer-4k"
SMALL_VOCAB_SIZE = 4096
PAD_PIECE = "<pad>"
# Embedded tokenizer names -> their folder inside the embedded corpus.
EMBEDDED_TOKENIZERS = {EMBEDDED_TOKENIZER: TOKENIZER_SUBDIR, EMBEDDED_SMALL_TOKENIZER: SMALL_TOKENIZER_SUBDIR}


def tokenizer_location(cfg: DataConfig) -> str:
    """The folder or Hub id `cfg.tokenizer` stands for."""
    if cfg.tokenizer in EMBEDDED_TOKENIZERS:
        return str(cfg.embedded_dir / EMBEDDED_TOKENIZERS[cfg.tokenizer])
    return cfg.tokenizer


def build_tokenizer(cfg: DataConfig) -> PreTrainedTokenizerBase:
    """Load the configured tokenizer; it always has an EOS and a pad token and pads on the right."""
    location = tokenizer_location(cfg)
    if cfg.tokenizer in EMBEDDED_TOKENIZERS and not Path(location).is_dir():
        raise FileNotFoundError(
            f"DataConfig.tokenizer={cfg.tokenizer!r} but {location} does not exist; prepare it with "
            f"`nt-llm prepare-data --out {cfg.data_dir}` (or `make data`)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except OSError as err:
        raise OSError(
            f"DataConfig.tokenizer={cfg.tokenizer!r}: cannot load a tokenizer from {location!r} "
            f"(not a tokenizer folder, and the Hub is unreachable or has no such id): {err}"
        ) from err
    return ensure_special_tokens(tokenizer)


def ensure_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Packing needs an EOS to join documents; the pad mode needs a pad id (labels mask it anyway)."""
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no EOS token; packing cannot separate documents")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The paper pads after the text; a left-padding default (LLaMA's) would shift every position.
    tokenizer.padding_side = "right"
    return tokenizer


def vocab_size_of(tokenizer: PreTrainedTokenizerBase) -> int:
    """The model's vocabulary size: every id the tokenizer can emit, added tokens included."""
    return len(tokenizer)


def sentencepiece_to_hf(model_file: str | Path, out_dir: str | Path) -> PreTrainedTokenizerBase:
    """Save a LLaMA-format SentencePiece model (BOS 1, EOS 2, byte fallback) as a tokenizer folder."""
    model_file = Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(f"SentencePiece model not found: {model_file}")
    with tempfile.TemporaryDirectory() as tmp:
        # The conversion reads `tokenizer.model` from a folder, whatever the file was called.
        shutil.copyfile(model_file, Path(tmp) / "tokenizer.model")
        tokenizer = LlamaTokenizer.from_pretrained(tmp, add_bos_token=True, add_eos_token=False)
    if PAD_PIECE in tokenizer.get_vocab():
        # A pad of its own keeps EOS (every document boundary when packing) an ordinary, trained token.
        tokenizer.pad_token = PAD_PIECE
    tokenizer = ensure_special_tokens(tokenizer)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def train_sentencepiece(texts: Iterable[str], model_prefix: str | Path, vocab_size: int, pad: bool = False) -> Path:
    """Train a LLaMA-format SentencePiece BPE (BOS 1, EOS 2, byte fallback; ``pad``: a pad piece at id 3).

    Deterministic for the same texts in the same order: one thread, every sentence used (no sampling, so
    no shuffling), no randomised settings. Each text is one training sentence.
    """
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(model_prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3 if pad else -1,
        pad_piece=PAD_PIECE,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        num_threads=1,
        minloglevel=2,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=1 << 16,
    )
    return Path(f"{model_prefix}.model")


def pieces_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the vocabulary (piece, id) in id order: equal digests mean the same tokenizer pieces."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256("\n".join(f"{i}\t{piece}" for piece, i in vocab).encode("utf-8")).hexdigest()
