"""Push an exported model folder to the Hugging Face Hub.

The folder is checked locally first (config, weights, the custom code `auto_map` points to), so a
push never publishes something `from_pretrained(..., trust_remote_code=True)` cannot load. Offline
mode or an unreachable Hub fails at once with a clear error; the local folder is only ever read.
The token comes from the argument, `HF_TOKEN` or the stored login, and never appears in logs or
error messages.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

logger = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
# Never worth publishing: bytecode left by a local import of the custom code.
IGNORE_PATTERNS = ["__pycache__/*", "*.pyc"]


class HubPushError(RuntimeError):
    """The push cannot happen (offline, unreachable, rejected); the local folder is untouched."""


class NotAModelFolderError(ValueError):
    """The folder is not something `from_pretrained` can load."""


def step_commit_message(step: int, note: str = "") -> str:
    """The commit message for a push at training step `step` (checkpoint-interval pushes)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"nt_llm: step {step}" + (f" ({note})" if note else "")


def _auto_map_modules(auto_map: dict[str, Any]) -> set[str]:
    """Module file names referenced by `auto_map` ("module.Class", or a [slow, fast] pair for tokenizers)."""
    modules = set()
    for ref in auto_map.values():
        for item in ref if isinstance(ref, list) else [ref]:
            if item is None:
                continue
            if "--" in item:  # "repo--module.Class": code lives in another repo
                continue
            modules.add(item.rsplit(".", 1)[0] + ".py")
    return modules


def _check_sharded(folder: Path, index_name: str) -> None:
    index = json.loads((folder / index_name).read_text(encoding="utf-8"))
    missing = sorted({f for f in index.get("weight_map", {}).values() if not (folder / f).is_file()})
    if missing:
        raise NotAModelFolderError(f"{folder}: {index_name} lists shard(s) that are missing: {missing}")


def check_model_folder(folder: Path) -> dict[str, Any]:
    """Raise NotAModelFolderError unless `folder` holds a loadable model; returns its config."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAModelFolderError(f"{folder} is not a folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise NotAModelFolderError(f"{folder} is not a model folder: config.json missing")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise NotAModelFolderError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or not config.get("model_type"):
        raise NotAModelFolderError(f"{config_path} has no model_type")
    weights = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        raise NotAModelFolderError(f"{folder} holds no weights (none of {list(WEIGHT_FILES)})")
    for name in weights:
        if name.endswith(".index.json"):
            _check_sharded(folder, name)
    missing_code = sorted(m for m in _auto_map_modules(config.get("auto_map", {})) if not (folder / m).is_file())
    if missing_code:
        raise NotAModelFolderError(
            f"{folder}: config.json auto_map needs {missing_code}, not in the folder; trust_remote_code loading "
            "would fail"
        )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        logger.warning(
            "%s has no tokenizer files (%s): lm-eval and generate() will need one", folder, ", ".join(TOKENIZER_FILES)
        )
    return config


def _network_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub speaks HTTP through httpx2 (2.x) or httpx (1.x), whose transport errors are not OSErrors.
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        if importlib.util.find_spec(name) is not None:
            errors.append(importlib.import_module(name).TransportError)
    return tuple(errors)


def hub_offline() -> bool:
    """huggingface_hub's offline switch, also when HF_HUB_OFFLINE was set after it was imported."""
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def push_folder(
    folder: Path | str,
    repo_id: str,
    *,
    private: bool,
    revision: str | None,
    commit_message: str,
    token: str | None = None,
) -> CommitInfo:
    """Upload `folder` (an exported model) to the Hub model repo `repo_id`; returns huggingface_hub's CommitInfo.

    Creates the repo if needed (`private` applies only to a repo this call creates) and, when `revision` is
    given, the branch `revision` from main. Raises NotAModelFolderError for a folder `from_pretrained` could
    not load, HubPushError when offline (`HF_HUB_OFFLINE=1`), unreachable or rejected; never writes to
    `folder`.
    """
    folder = Path(folder).expanduser().resolve()
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"repo_id {repo_id!r} is not a Hub repo id ('namespace/name'): {err}") from err
    if "/" not in repo_id:
        raise ValueError(f"repo_id {repo_id!r} must be 'namespace/name' (user or organisation first)")
    if not commit_message.strip():
        raise ValueError("commit_message must not be empty")
    if revision is not None and not revision.strip():
        raise ValueError("revision must be None (main) or a branch name")
    check_model_folder(folder)
    if hub_offline():
        raise HubPushError(
            f"HF_HUB_OFFLINE=1 is set: not pushing {folder} to {repo_id}. The folder is untouched; "
            "unset HF_HUB_OFFLINE and push again"
        )
    api = HfApi(token=token)
    logger.info("pushing %s to %s (revision %s, private=%s)", folder, repo_id, revision or "main", private)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            revision=revision,
            commit_message=commit_message,
            ignore_patterns=IGNORE_PATTERNS,
        )
    except _network_errors() as err:
        raise HubPushError(
            f"cannot reach the Hub at {api.endpoint} to push {folder} to {repo_id} "
            f"({type(err).__name__}: {err}). The folder is untouched"
        ) from err
    except HfHubHTTPError as err:  # auth, permissions, bad revision: huggingface_hub never puts the token in these
        raise HubPushError(
            f"the Hub refused the push of {folder} to {repo_id} ({type(err).__name__}: {err}). The folder is untouched"
        ) from err
    logger.info("pushed %s to %s: %s", folder, repo_id, commit.commit_url)
    return commit
