"""nt_llm.train.callbacks.HubPush: checkpoints pushed to the Hub in the background during training, offline (the
upload is faked at nt_llm.hub.push_folder, the boundary HubPush calls)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
from helpers.training import tiny_recipe

from nt_llm import hub
from nt_llm.checkpoint import Checkpoint, complete_checkpoints
from nt_llm.train import RecipeError, train
from nt_llm.train import callbacks as cb
from nt_llm.train.recipe import recipe_from_dict

REPO_ID = "me/nt-tiny"


class FakeUploads:
    """Stands in for hub.push_folder: records each upload (its checkpoint step, message, what the folder held
    once released), optionally blocks until released, and fails the uploads whose step is in `fail`."""

    def __init__(self, *, block: bool = False, fail: tuple[int, ...] = ()) -> None:
        self.release = threading.Event()
        if not block:
            self.release.set()
        self.fail = fail
        self.started: list[int] = []
        self.done: list[int] = []
        self.calls: list[dict] = []

    def __call__(self, folder: Path, repo_id: str, **kwargs: object) -> mock.Mock:
        step = int(str(kwargs["commit_message"]).split()[2])  # "nt_llm: step N (checkpoint)"
        self.started.append(step)
        assert self.release.wait(120), "the test never released the upload"
        # Listed once released: what a slow upload still finds after later checkpoints were saved and pruned.
        self.calls.append(
            {"step": step, "repo_id": repo_id, "files": sorted(p.name for p in Path(folder).iterdir()), **kwargs}
        )
        if step in self.fail:
            raise hub.HubPushError(f"the Hub refused step {step} (fake)")
        self.done.append(step)
        return mock.Mock(commit_url=f"https://hub.example/commit/{step}")


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> FakeUploads:
    fake = FakeUploads(block=True)
    monkeypatch.setattr(hub, "push_folder", fake)
    return fake


def _recipe(tmp_path: Path, **checkpoint: object) -> dict:
    # Checkpoints at steps 3 and 6; keep_last=1 prunes step_3 at step 6, while its upload may still be pending.
    return tiny_recipe(tmp_path, checkpoint={"push_to_hub": REPO_ID, "keep_last": 1, **checkpoint})


def _temp_exports() -> set[Path]:
    import tempfile

    return set(Path(tempfile.gettempdir()).glob("nt_push-step_*"))


@pytest.mark.usefixtures("online")
def test_a_slow_upload_does_not_hold_up_training_and_the_end_waits_for_it(
    tmp_path: Path, uploads: FakeUploads, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = _temp_exports()
    seen: list[tuple[int, list[int], list[int]]] = []

    def on_checkpoint(checkpoint: Checkpoint) -> None:
        seen.append((checkpoint.step, list(uploads.started), list(uploads.done)))
        if checkpoint.step == 6:
            # Step 3's upload is still blocked here: the loop went on to step 6 without it. Let it finish now; the
            # end of the run must wait for both.
            uploads.release.set()

    result = train(recipe_from_dict(_recipe(tmp_path, hub_revision="exp")), on_checkpoint=[on_checkpoint])
    assert result.step == 6 and not result.interrupted
    assert seen[0][0] == 3 and seen[1][0] == 6
    assert seen[1][2] == []  # nothing uploaded yet when the loop had trained to step 6 and saved it
    assert uploads.done == [3, 6]  # both waited for, in the order saved
    for call in uploads.calls:
        assert call["repo_id"] == REPO_ID and call["revision"] == "exp" and call["private"] is False
        assert call["commit_message"] == f"nt_llm: step {call['step']} (checkpoint)"
        # What was uploaded is a whole export, also step 3's, whose checkpoint keep_last=1 pruned meanwhile.
        assert {"README.md", "config.json", "model.safetensors", "modeling_neurotrails.py"} <= set(call["files"])
    assert [p.name for p in complete_checkpoints(tmp_path / "run")] == ["step_6"]
    assert _temp_exports() == before  # each temporary export removed after its upload
    assert "pushed step_3 to me/nt-tiny" in caplog.text and "pushed step_6 to me/nt-tiny" in caplog.text


@pytest.mark.usefixtures("online")
def test_a_failed_upload_is_named_and_the_run_keeps_its_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeUploads(fail=(3,))
    monkeypatch.setattr(hub, "push_folder", fake)
    caplog.set_level(logging.INFO)
    result = train(recipe_from_dict(_recipe(tmp_path, keep_last=5)))
    assert result.step == 6 and fake.started == [3, 6] and fake.done == [6]
    assert [p.name for p in complete_checkpoints(tmp_path / "run")] == ["step_3", "step_6"]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and "step_3" in r.getMessage()]
    assert len(failures) == 1
    message = failures[0].getMessage()
    # Which checkpoint, which repo, the error, and that the checkpoint is still there.
    assert "step_3" in message and REPO_ID in message and "the Hub refused step 3 (fake)" in message
    assert str(tmp_path / "run" / "checkpoints" / "step_3") in message and "kept locally" in message
    assert "1 of the checkpoint pushes to me/nt-tiny failed" in caplog.text


def _checkpoint(tmp_path: Path, step: int) -> Checkpoint:
    return mock.Mock(spec=Checkpoint, path=tmp_path / "run" / "checkpoints" / f"step_{step}", step=step)


def _fake_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """export.export writing a stand-in folder: the queue's behaviour does not need real weights."""

    def fake_export(checkpoint: Path, out: Path) -> mock.Mock:
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        return mock.Mock(out=out, step=int(Path(checkpoint).name.split("_")[1]))

    monkeypatch.setattr(cb.export, "export", fake_export)


@pytest.mark.usefixtures("online")
def test_uploads_keep_their_order_and_a_full_queue_holds_the_next_checkpoint(
    tmp_path: Path, uploads: FakeUploads, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _fake_export(monkeypatch)
    push = cb.HubPush(REPO_ID, max_pending=1)
    push(_checkpoint(tmp_path, 1))  # taken by the worker, blocked in its upload
    deadline = time.monotonic() + 30
    while uploads.started != [1]:
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.01)
    push(_checkpoint(tmp_path, 2))  # waits in the queue: its one place
    third = threading.Thread(target=push, args=(_checkpoint(tmp_path, 3),))
    third.start()
    third.join(timeout=0.5)
    assert third.is_alive()  # no place for a third export: the caller waits
    assert "waits for a place" in caplog.text
    uploads.release.set()
    third.join(timeout=30)
    assert not third.is_alive()
    assert push.close() == [] and uploads.done == [1, 2, 3]
    assert push.pushed == [_checkpoint(tmp_path, s).path for s in (1, 2, 3)]


@pytest.mark.usefixtures("online")
def test_an_interrupt_while_waiting_abandons_the_uploads_by_name(
    tmp_path: Path, uploads: FakeUploads, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_export(monkeypatch)
    push = cb.HubPush(REPO_ID, max_pending=2)
    push(_checkpoint(tmp_path, 1))
    push(_checkpoint(tmp_path, 2))
    workdirs = {u.workdir for u in push._in_flight}
    assert len(workdirs) == 2 and all(w.is_dir() for w in workdirs)
    monkeypatch.setattr(push._queue, "join", mock.Mock(side_effect=KeyboardInterrupt))  # Ctrl-C while waiting
    with pytest.raises(KeyboardInterrupt):
        push.close()
    assert "abandoned step_1, step_2" in caplog.text and "kept locally" in caplog.text
    assert not any(w.exists() for w in workdirs)
    uploads.release.set()  # the daemon worker finishes its upload quietly: nothing is recorded as failed
    assert push.failures == []


def test_offline_export_failure_and_bad_repo_ids_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    push = cb.HubPush(REPO_ID)
    push(_checkpoint(tmp_path, 1))  # conftest sets HF_HUB_OFFLINE=1: nothing exported
    assert [f.checkpoint.name for f in push.failures] == ["step_1"]
    assert "HF_HUB_OFFLINE=1" in push.failures[0].error
    monkeypatch.setattr(cb.hub, "hub_offline", lambda: False)
    push(_checkpoint(tmp_path, 2))  # no such checkpoint: the export fails, training would go on
    assert (
        push.failures[1].checkpoint.name == "step_2"
        and "the export failed: TrainedModelError" in push.failures[1].error
    )
    assert "the push of checkpoint step_2 to me/nt-tiny failed" in caplog.text
    assert push.close() == push.failures
    with pytest.raises(RecipeError, match="checkpoint.push_to_hub.*namespace/name"):
        cb.HubPush("no-namespace")
    with pytest.raises(RecipeError, match="revision"):
        cb.HubPush(REPO_ID, revision=" ")
