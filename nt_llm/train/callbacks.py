"""Checkpoint callbacks of the training loop (``train(on_checkpoint=...)``): called on the main process with each
complete checkpoint.

``HubPush`` (``checkpoint.push_to_hub`` adds one) pushes every checkpoint to the Hub without holding the loop up
for the upload: the checkpoint is exported to a temporary folder at once, while it surely exists (``keep_last``
prunes it at a later save, possibly while an upload would still be reading it), and a single worker thread uploads
the exports in the order they were made, deleting each afterwards. ``close()`` waits for what is queued; ``train()``
calls it at the end of the run, also when the run stops early.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from nt_llm import checkpoint as ckpt
from nt_llm import export, hub
from nt_llm.train.recipe import RecipeError

logger = logging.getLogger(__name__)

_STOP = None  # what the queue carries to end the worker


@dataclass(frozen=True)
class PushFailure:
    """A checkpoint that did not reach the Hub; the checkpoint itself stays in the run folder (until ``keep_last``
    prunes it as usual)."""

    checkpoint: Path
    repo_id: str
    error: str

    def __str__(self) -> str:
        return f"{self.checkpoint.name} -> {self.repo_id}: {self.error}"


@dataclass(frozen=True)
class _Upload:
    checkpoint: Path
    folder: Path  # the export to upload
    workdir: Path  # the temporary folder holding it, removed once the upload is over, whatever its outcome
    message: str


class HubPush:
    """Export each saved checkpoint and push it to the Hub model repo ``repo_id`` in the background.

    A failed export or upload is logged naming the checkpoint, the repo and the error, and kept in ``failures``;
    training goes on and the checkpoint stays local. At most ``max_pending`` exports wait for the uploader: a
    checkpoint saved while that many are waiting waits for a place (said in the log), so a Hub slower than the
    checkpoints cannot fill the disk with exports.
    """

    def __init__(
        self,
        repo_id: str,
        private: bool = False,
        revision: str | None = None,
        *,
        max_pending: int = 2,
        token: str | None = None,
    ) -> None:
        try:
            export.PushOptions(repo_id=repo_id, private=private, revision=revision)
        except export.ExportError as err:  # at the start of the run, not at its first checkpoint
            raise RecipeError(f"checkpoint.push_to_hub / hub_revision: {err}") from err
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.repo_id, self.private, self.revision, self.token = repo_id, private, revision, token
        self.failures: list[PushFailure] = []
        self.pushed: list[Path] = []  # checkpoints whose upload succeeded, in order
        self._queue: queue.Queue[_Upload | None] = queue.Queue(maxsize=max_pending)
        self._lock = threading.Lock()
        self._in_flight: list[_Upload] = []  # queued or uploading, oldest first
        self._abandoned = False
        self._worker: threading.Thread | None = None

    # ---- the training loop's side ---------------------------------------------------------------------------

    def __call__(self, checkpoint: ckpt.Checkpoint) -> None:
        if hub.hub_offline():
            self._fail(checkpoint.path, "HF_HUB_OFFLINE=1 is set; nothing was exported or uploaded")
            return
        workdir = Path(tempfile.mkdtemp(prefix=f"nt_push-{checkpoint.path.name}-"))
        try:
            result = export.export(checkpoint.path, workdir / "model")
        except Exception as err:  # whatever went wrong, the run goes on: the checkpoint is saved locally
            shutil.rmtree(workdir, ignore_errors=True)
            self._fail(checkpoint.path, f"the export failed: {type(err).__name__}: {err}")
            return
        step = result.step if result.step is not None else checkpoint.step
        upload = _Upload(checkpoint.path, result.out, workdir, hub.step_commit_message(step, "checkpoint"))
        self._start_worker()
        with self._lock:
            self._in_flight.append(upload)
        if self._queue.full():
            logger.info(
                "%d exports are waiting for the upload to %s: %s waits for a place",
                self._queue.maxsize,
                self.repo_id,
                checkpoint.path.name,
            )
        self._queue.put(upload)
        logger.info("queued %s for upload to %s", checkpoint.path.name, self.repo_id)

    def close(self) -> list[PushFailure]:
        """Wait for every queued upload, stop the worker and return the failures (each already logged).

        An interrupt while waiting (Ctrl-C) abandons what is left: it is named in the log, its temporary exports
        are removed, and the interrupt goes on; the local checkpoints are untouched.
        """
        if self._worker is None:
            return list(self.failures)
        with self._lock:
            waiting = [u.checkpoint.name for u in self._in_flight]
        if waiting:
            logger.info("waiting for %d upload(s) to %s: %s", len(waiting), self.repo_id, ", ".join(waiting))
        try:
            self._queue.join()
        except KeyboardInterrupt:
            self._abandon()
            raise
        self._queue.put(_STOP)
        self._worker.join()
        self._worker = None
        if self.failures:
            logger.warning(
                "%d of the checkpoint pushes to %s failed (the checkpoints are kept locally): %s",
                len(self.failures),
                self.repo_id,
                "; ".join(map(str, self.failures)),
            )
        return list(self.failures)

    def __enter__(self) -> HubPush:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- the worker's side ----------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        if self._worker is None:
            # A daemon: an upload abandoned by a second Ctrl-C must not keep the process alive.
            self._worker = threading.Thread(target=self._work, name=f"hub-push {self.repo_id}", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            upload = self._queue.get()
            try:
                if upload is _STOP:
                    return
                self._upload(upload)
            finally:
                self._queue.task_done()

    def _upload(self, upload: _Upload) -> None:
        try:
            commit = hub.push_folder(
                upload.folder,
                self.repo_id,
                private=self.private,
                revision=self.revision,
                commit_message=upload.message,
                token=self.token,
            )
        except Exception as err:  # a worker that died would leave close() waiting: every failure is recorded
            if not self._abandoned:
                self._fail(upload.checkpoint, f"{type(err).__name__}: {err}")
        else:
            self.pushed.append(upload.checkpoint)
            logger.info("pushed %s to %s: %s", upload.checkpoint.name, self.repo_id, commit.commit_url)
        finally:
            shutil.rmtree(upload.workdir, ignore_errors=True)
            with self._lock:
                self._in_flight.remove(upload)

    def _fail(self, checkpoint: Path, error: str) -> None:
        failure = PushFailure(checkpoint, self.repo_id, error)
        self.failures.append(failure)
        logger.error(
            "the push of checkpoint %s to %s failed (%s); the checkpoint is kept locally in %s",
            checkpoint.name,
            self.repo_id,
            error,
            checkpoint,
        )

    def _abandon(self) -> None:
        """Drop the queued uploads and the running one's export (the process is being interrupted)."""
        self._abandoned = True
        with self._lock:
            names = [u.checkpoint.name for u in self._in_flight]
        while True:
            try:
                upload = self._queue.get_nowait()
            except queue.Empty:
                break
            if upload is not _STOP:
                shutil.rmtree(upload.workdir, ignore_errors=True)
                with self._lock:
                    self._in_flight.remove(upload)
            self._queue.task_done()
        with self._lock:
            running = list(self._in_flight)
        for upload in running:  # its export goes, and with it the upload
            shutil.rmtree(upload.workdir, ignore_errors=True)
        logger.warning(
            "interrupted while waiting for the uploads to %s: abandoned %s; the checkpoints are kept locally",
            self.repo_id,
            ", ".join(names) or "nothing",
        )
