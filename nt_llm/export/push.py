"""Where an export is pushed (PushOptions) and the push itself, through nt_llm.hub. Training's checkpoint pushes go
through nt_llm.train.callbacks.HubPush, which exports at once and uploads in the background."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitInfo
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from nt_llm import hub
from nt_llm.export.options import ExportError


@dataclass
class PushOptions:
    """Where `export` pushes after writing. The token is never an option: HF_TOKEN or the stored login."""

    repo_id: str
    private: bool = False
    revision: str | None = None
    commit_message: str | None = None  # None: "nt_llm: step N (export)"

    def __post_init__(self) -> None:
        try:
            validate_repo_id(self.repo_id)
        except HFValidationError as err:
            raise ExportError(f"push_to_hub {self.repo_id!r} is not a Hub repo id: {err}") from err
        if "/" not in self.repo_id:
            raise ExportError(f"push_to_hub {self.repo_id!r} must be 'namespace/name' (user or organisation first)")
        if self.revision is not None and not self.revision.strip():
            raise ExportError("revision must be a branch name (leave it out for main)")
        if self.commit_message is not None and not self.commit_message.strip():
            raise ExportError("commit_message must not be empty")


def refuse_offline(consequence: str) -> None:
    """hub.HubPushError when HF_HUB_OFFLINE is set, before anything is written; `consequence` says what that means
    for the caller's files."""
    if hub.hub_offline():
        raise hub.HubPushError(f"HF_HUB_OFFLINE=1 is set: {consequence}")


def push_export(folder: Path, push: PushOptions, step: int | None, note: str, token: str | None = None) -> CommitInfo:
    """Push the exported `folder` as `push` says, with its commit message or "nt_llm: step N (note)"."""
    message = push.commit_message or hub.step_commit_message(step or 0, note)
    return hub.push_folder(
        folder, push.repo_id, private=push.private, revision=push.revision, commit_message=message, token=token
    )
