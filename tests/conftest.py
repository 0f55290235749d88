"""Test-wide settings and fixtures: no network, quiet libraries, deterministic CPU execution, a fresh accelerate
state for every test; shared helpers are in tests/helpers/."""

import os

# Set before transformers / datasets / huggingface_hub are imported anywhere: they read these at import.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from collections.abc import Iterator  # noqa: E402
from unittest import mock  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers.training import reset_accelerate  # noqa: E402
from huggingface_hub import constants  # noqa: E402

from nt_llm import hub  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def fresh_accelerate_state() -> Iterator[None]:
    """Every training builds its own Accelerator; none may see another test's process-wide accelerate state."""
    yield
    reset_accelerate()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo the test-wide HF_HUB_OFFLINE=1 for this test only (the Hub client is mocked or local)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> mock.MagicMock:
    """huggingface_hub's HfApi replaced at nt_llm.hub's boundary; assert on its calls."""
    api_class = mock.MagicMock(name="HfApi")
    api_class.return_value.upload_folder.return_value = mock.Mock(commit_url="https://hub.example/commit/1")
    monkeypatch.setattr(hub, "HfApi", api_class)
    return api_class
