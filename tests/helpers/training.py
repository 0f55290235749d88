"""Tiny training recipes over local data, and the accelerate reset between trainings in one test."""

from pathlib import Path
from typing import Any

from accelerate.state import AcceleratorState, GradientState

from helpers.configs import tiny_size_file
from helpers.data import corpus, tiny_tokenizer_dir


def reset_accelerate() -> None:
    """Each training builds its own Accelerator; accelerate keeps process-wide singletons between them."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# tiny_recipe's context length (an export of its runs takes it as max_position_embeddings).
SEQ_LEN = 16

# What each method lets a recipe choose of its shape (dense is one model, a full ensemble takes the whole depth).
SHAPES: dict[str, dict[str, int]] = {
    "dense": {},
    "full_ensemble": {"ensemble_size": 3},
    "treenet": {"ensemble_size": 3, "head_layers": 2},
    "neurotrails": {"ensemble_size": 3, "head_layers": 2},
}


def tiny_recipe(tmp_path: Path, method: str = "neurotrails", **sections: dict[str, Any]) -> dict[str, Any]:
    """A recipe dict that trains in seconds: local jsonl shards, a 400-piece tokenizer, hidden 32."""
    data_dir = tmp_path / "corpus"
    if not data_dir.is_dir():
        data_dir.mkdir(parents=True)
        corpus(data_dir, n_files=4, docs_per_file=60)
    size = tiny_size_file(tmp_path)
    recipe: dict[str, Any] = {
        "run": {"name": f"{method}_test", "output_dir": str(tmp_path / "run"), "seed": 0},
        "model": {"size": size, "method": method, **SHAPES[method]},
        "sparsity": {"density": 0.5, "update_frequency": 2, "prune_rate": 0.3} if method == "neurotrails" else None,
        "data": {
            "source": "files",
            "train_files": [str(data_dir / "train-*.jsonl")],
            "validation_files": [str(data_dir / "validation.jsonl")],
            "tokenizer": tiny_tokenizer_dir(),
            "seq_len": SEQ_LEN,
            "batch_size": 4,
            "shuffle_buffer": 16,
            "validation_tokens": 256,
            "tokenize_batch": 8,
        },
        # fp32 pinned: "auto" would pick bf16 on CPUs with native bf16, and tests compare numbers across CPU kinds.
        "optim": {"lr": 1e-2, "max_steps": 6, "warmup_steps": 1, "total_batch_size": 8, "precision": "no"},
        "eval": {"every": 3},
        "checkpoint": {"every": 3, "keep_last": 5},
        "logging": {"every": 1, "progress_bar": False, "trackers": ["none"]},
    }
    for name, values in sections.items():
        recipe[name] = {**(recipe.get(name) or {}), **values} if values is not None else None
    return recipe
