"""nt_llm.hub: pushing an exported folder, with the Hub client mocked at its boundary (no network)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock

import pytest
import torch
from helpers.no_nt_llm import BLOCK_NT_LLM
from helpers.zero_shot import save_tiny_llama, save_tiny_neurotrails
from huggingface_hub import constants

from nt_llm import hub

TOKEN = "hf_NeverLogMe0123456789"


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def nt_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_neurotrails(tmp_path_factory.mktemp("nt_export"))


@pytest.mark.usefixtures("online")
def test_push_creates_repo_branch_and_uploads(
    nt_folder: Path, fake_api: mock.MagicMock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = _snapshot(nt_folder)
    commit = hub.push_folder(
        nt_folder,
        "me/nt-tiny",
        private=True,
        revision="step-100",
        commit_message=hub.step_commit_message(100, "export"),
        token=TOKEN,
    )
    assert commit.commit_url == "https://hub.example/commit/1"
    fake_api.assert_called_once_with(token=TOKEN)
    api = fake_api.return_value
    assert [c[0] for c in api.mock_calls] == ["create_repo", "create_branch", "upload_folder"]
    api.create_repo.assert_called_once_with("me/nt-tiny", repo_type="model", private=True, exist_ok=True)
    api.create_branch.assert_called_once_with("me/nt-tiny", branch="step-100", repo_type="model", exist_ok=True)
    upload = api.upload_folder.call_args.kwargs
    assert upload["repo_id"] == "me/nt-tiny" and upload["folder_path"] == str(nt_folder.resolve())
    assert upload["revision"] == "step-100" and upload["commit_message"] == "nt_llm: step 100 (export)"
    assert upload["repo_type"] == "model"
    assert "me/nt-tiny" in caplog.text and TOKEN not in caplog.text
    assert _snapshot(nt_folder) == before


@pytest.mark.usefixtures("online")
def test_push_to_main_creates_no_branch(nt_folder: Path, fake_api: mock.MagicMock) -> None:
    hub.push_folder(str(nt_folder), "org/public-model", private=False, revision=None, commit_message="first")
    api = fake_api.return_value
    fake_api.assert_called_once_with(token=None)  # huggingface_hub then reads HF_TOKEN or the stored login
    api.create_repo.assert_called_once_with("org/public-model", repo_type="model", private=False, exist_ok=True)
    api.create_branch.assert_not_called()
    assert api.upload_folder.call_args.kwargs["revision"] is None


_LOAD_WITHOUT_NT_LLM = (
    BLOCK_NT_LLM
    + """
import torch
from transformers import AutoModelForCausalLM
folder, ids_path, logits_path = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
assert not type(model).__module__.startswith("nt_llm"), type(model).__module__
ids = torch.load(ids_path)
with torch.no_grad():
    logits = model(ids).logits
torch.testing.assert_close(logits, torch.load(logits_path), rtol=1e-5, atol=1e-5)
out = model.generate(ids[:, :4], max_new_tokens=3, do_sample=False)
assert out.shape == (ids.shape[0], 7), out.shape
assert "nt_llm" not in sys.modules
print("loaded", type(model).__name__)
"""
)


@pytest.mark.usefixtures("online")
def test_uploaded_folder_loads_with_remote_code_without_nt_llm(
    nt_folder: Path, fake_api: mock.MagicMock, tmp_path: Path
) -> None:
    from nt_llm.modeling import NeuroTrailsForCausalLM

    model = NeuroTrailsForCausalLM.from_pretrained(nt_folder).eval()
    ids = torch.randint(3, model.config.vocab_size, (2, 10))
    with torch.no_grad():
        torch.save(model(ids).logits, tmp_path / "logits.pt")
    torch.save(ids, tmp_path / "ids.pt")
    loads: list[subprocess.CompletedProcess] = []

    def upload_folder(**kwargs: object) -> mock.Mock:
        # What would be uploaded must stand alone: load it in a fresh process where nt_llm cannot be imported.
        env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
        loads.append(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _LOAD_WITHOUT_NT_LLM,
                    str(kwargs["folder_path"]),
                    str(tmp_path / "ids.pt"),
                    str(tmp_path / "logits.pt"),
                ],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=180,
            )
        )
        return mock.Mock(commit_url="u")

    fake_api.return_value.upload_folder.side_effect = upload_folder
    hub.push_folder(nt_folder, "me/nt-tiny", private=True, revision=None, commit_message="m")
    assert len(loads) == 1
    assert loads[0].returncode == 0, loads[0].stderr[-3000:]
    assert "loaded NeuroTrailsForCausalLM" in loads[0].stdout


def test_offline_push_fails_at_once_and_keeps_folder(
    nt_folder: Path, fake_api: mock.MagicMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _snapshot(nt_folder)
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set for every test by conftest
    with pytest.raises(hub.HubPushError, match="HF_HUB_OFFLINE=1 is set.*untouched"):
        hub.push_folder(nt_folder, "me/x", private=True, revision=None, commit_message="m", token=TOKEN)
    # Set after huggingface_hub was imported: its constant is stale, the user's intent is not.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(hub.HubPushError, match="HF_HUB_OFFLINE"):
        hub.push_folder(nt_folder, "me/x", private=True, revision=None, commit_message="m")
    fake_api.assert_not_called()
    assert _snapshot(nt_folder) == before


class _RefusingHub(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # http.server names its handlers so
        body = json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.usefixtures("online")
def test_unreachable_and_refusing_hub_give_clear_errors(nt_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real client against local endpoints only: a closed port, then a server that answers 401.
    before = _snapshot(nt_folder)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(hub.HubPushError, match=r"cannot reach the Hub at http://127\.0\.0\.1:9 .*untouched") as err:
        hub.push_folder(nt_folder, "me/x", private=True, revision=None, commit_message="m", token=TOKEN)
    assert TOKEN not in str(err.value)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(hub.HubPushError, match="the Hub refused the push .*401") as err:
            hub.push_folder(nt_folder, "me/x", private=True, revision=None, commit_message="m", token=TOKEN)
        assert TOKEN not in str(err.value)
    finally:
        server.shutdown()
        server.server_close()
    assert _snapshot(nt_folder) == before


@pytest.mark.usefixtures("online")
def test_not_a_model_folder_is_refused_before_any_hub_call(
    nt_folder: Path, tmp_path: Path, fake_api: mock.MagicMock
) -> None:
    def push(folder: Path) -> None:
        hub.push_folder(folder, "me/x", private=True, revision=None, commit_message="m")

    with pytest.raises(hub.NotAModelFolderError, match="is not a folder"):
        push(tmp_path / "missing")
    with pytest.raises(hub.NotAModelFolderError, match="config.json missing"):
        push(tmp_path)
    broken = shutil.copytree(nt_folder, tmp_path / "broken")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(hub.NotAModelFolderError, match="not valid JSON"):
        push(broken)
    shutil.copy(nt_folder / "config.json", broken / "config.json")
    modeling = next(broken.glob("modeling_*.py"))
    modeling.unlink()
    with pytest.raises(hub.NotAModelFolderError, match=f"auto_map needs \\['{modeling.name}'\\]"):
        push(broken)
    shutil.copy(nt_folder / modeling.name, modeling)
    (broken / "model.safetensors").unlink()
    with pytest.raises(hub.NotAModelFolderError, match="holds no weights"):
        push(broken)
    (broken / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}})
    )
    with pytest.raises(hub.NotAModelFolderError, match="model-00001-of-00002.safetensors"):
        push(broken)
    fake_api.assert_not_called()


def test_llama_folder_passes_the_check(tmp_path: Path) -> None:
    config = hub.check_model_folder(save_tiny_llama(tmp_path))
    assert config["model_type"] == "llama"


def test_bad_arguments_are_named(nt_folder: Path) -> None:
    def push(**overrides: object) -> None:
        kwargs = dict(repo_id="me/x", private=True, revision=None, commit_message="m") | overrides
        hub.push_folder(nt_folder, **kwargs)

    with pytest.raises(ValueError, match="repo_id 'no-namespace' must be 'namespace/name'"):
        push(repo_id="no-namespace")
    with pytest.raises(ValueError, match="repo_id 'me/bad name'"):
        push(repo_id="me/bad name")
    with pytest.raises(ValueError, match="commit_message"):
        push(commit_message="  ")
    with pytest.raises(ValueError, match="revision"):
        push(revision="")
    assert hub.step_commit_message(7) == "nt_llm: step 7"
    with pytest.raises(ValueError, match="step"):
        hub.step_commit_message(-1)
