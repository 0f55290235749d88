"""Open a trained model: what export, evaluate and zero-shot are given as MODEL.

    trained = open_trained("runs/neurotrails_tiny")     # a run folder: its newest complete checkpoint
    trained = open_trained("runs/x/checkpoints/step_4")  # a step_<N> checkpoint
    trained = open_trained("out/nt_tiny")                # an export, or any Hugging Face model folder

A checkpoint's weights are its ``model/`` folder (every engine leaves the gathered full weights there), its DST masks
``masks.safetensors`` beside it (nt_llm.checkpoint says where each lies). The DST keeps masked weights at exactly 0
after every optimizer step; readers still apply the masks (``TrainedModel.apply_masks``), so nothing they compute
depends on that having held. A model folder carries no masks: an export's were applied when it was written.

Whatever is wrong with the path is one error, :class:`TrainedModelError`, naming the path and the problem: it does
not exist, is a file, is a torn checkpoint, a run folder without a complete checkpoint, a folder that is none of the
three, or a config.json that is not a JSON object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nt_llm import checkpoint as ckpt

NEUROTRAILS_MODEL_TYPE = "neurotrails"  # NeuroTrailsConfig.model_type, without importing the model here
_EXPECTED = (
    f"expected a run folder with {ckpt.CHECKPOINTS}/, a step_<N> folder with {ckpt.MANIFEST}, "
    "or a model folder with config.json"
)


class TrainedModelError(ValueError):
    """MODEL cannot be opened: the message names the path and what is wrong with it."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(problem)


@dataclass(frozen=True)
class TrainedModel:
    """An opened MODEL. `model_dir` is the Hugging Face folder holding its weights, tokenizer and config.json (read
    into `config`); `checkpoint` is the training checkpoint it belongs to (None for a model folder), whose DST masks
    `masks` / `apply_masks` read and whose manifest holds the step, evaluation and recipe."""

    path: Path  # as given
    model_dir: Path
    config: dict[str, Any]
    checkpoint: ckpt.Checkpoint | None = None

    @property
    def model_type(self) -> str | None:
        value = self.config.get("model_type")
        return value if isinstance(value, str) else None

    @property
    def is_neurotrails(self) -> bool:
        return self.model_type == NEUROTRAILS_MODEL_TYPE

    @property
    def step(self) -> int | None:
        return self.checkpoint.step if self.checkpoint is not None else None

    @property
    def context(self) -> int | None:
        """The sequence length it was trained for: a checkpoint's data.seq_len (its config keeps the size's longer
        maximum), a folder's max_position_embeddings (an export's is the training context); None when unknown."""
        if self.checkpoint is not None and self.checkpoint.seq_len:
            return self.checkpoint.seq_len
        value = self.config.get("max_position_embeddings")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def require_neurotrails(self) -> None:
        """TrainedModelError unless the model is a NeuroTrails model (what export reads)."""
        if not self.is_neurotrails:
            raise TrainedModelError(
                self.model_dir,
                f"{self.model_dir} is not a NeuroTrails model (config.json model_type is {self.model_type!r}, "
                f"expected {NEUROTRAILS_MODEL_TYPE!r})",
            )

    def masks(self) -> dict[str, torch.Tensor]:
        """The checkpoint's DST masks, {parameter name: bool tensor}; {} for a dense run or a model folder."""
        if self.checkpoint is None:
            return {}
        try:
            return self.checkpoint.masks()
        except ckpt.CheckpointError as err:
            raise TrainedModelError(self.checkpoint.path, f"{self.checkpoint.path}: {err}") from err

    def apply_masks(self, state: dict[str, torch.Tensor]) -> int:
        """Zero, in place, the weights of `state` the masks switch off (a model's ``state_dict()`` shares its
        parameters' storage, so this zeroes the model); returns how many of them were not already exactly 0."""
        masks = self.masks()
        if not masks:
            return 0
        try:
            with torch.no_grad():
                return ckpt.apply_masks(state, masks)
        except ckpt.CheckpointError as err:
            path = self.checkpoint.path if self.checkpoint is not None else self.path
            raise TrainedModelError(path, f"{path}: {err}") from err


def open_trained(path: Path | str) -> TrainedModel:
    """Open MODEL: a run folder (its newest complete checkpoint), a ``step_<N>`` checkpoint, or a model folder (an
    nt_llm export or any Hugging Face model folder with config.json). TrainedModelError names what is wrong."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TrainedModelError(path, f"model {path} does not exist: {_EXPECTED}")
    if not path.is_dir():
        raise TrainedModelError(path, f"model {path} is a file: {_EXPECTED}")
    try:
        checkpoint = ckpt.locate(path)  # torn checkpoints and run folders without a complete one raise
    except ckpt.CheckpointError as err:
        raise TrainedModelError(path, str(err)) from err
    if checkpoint is not None:
        if not (checkpoint.model_dir / "config.json").is_file():
            raise TrainedModelError(
                checkpoint.path,
                f"checkpoint {checkpoint.path} has no {ckpt.MODEL}/config.json: it was written by an older trainer",
            )
        return TrainedModel(path, checkpoint.model_dir, _read_config(checkpoint.model_dir), checkpoint)
    if (path / "config.json").is_file():
        return TrainedModel(path, path, _read_config(path))
    raise TrainedModelError(
        path, f"{path} is not a NeuroTrails checkpoint or model folder (config.json missing): {_EXPECTED}"
    )


def _read_config(model_dir: Path) -> dict[str, Any]:
    config_file = model_dir / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrainedModelError(model_dir, f"{config_file} is not a readable model config (JSON): {err}") from err
    if not isinstance(config, dict):
        raise TrainedModelError(
            model_dir, f"{config_file} is not a model config: a JSON object expected, got {type(config).__name__}"
        )
    return config
