"""The package works installed as a wheel, away from the checkout: model sizes and the eval/ folder (lm-eval task
definitions, the paper's task list; linked into the package) are package data, and the console scripts are declared.
No network: the wheel is built without build isolation (setuptools from this venv) and installed without dependencies
(torch and transformers come from this venv)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Run by the venv's python with only the installed wheel providing nt_llm.
CHECK = """
import json, sys
import nt_llm
from nt_llm.modeling.sizes import available_sizes, build_config
from nt_llm.zeroshot.tasks import PAPER_GROUP, PAPER_TASKS, TASKS, TEMPLATES

config = build_config("130m", "neurotrails")
print(json.dumps({
    "file": nt_llm.__file__,
    "sizes": available_sizes(),
    "layers": config.num_hidden_layers,
    "head_layers": config.head_layers,
    "templates": str(TEMPLATES),
    "paper_group": str(PAPER_GROUP),
    "offline_tasks": [task.name for task in TASKS],
    "paper_tasks": list(PAPER_TASKS),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this venv: the wheel cannot be built offline")
    root = tmp_path_factory.mktemp("wheel")
    # A copy of what the wheel is built from, so that the build's own folders (build/, *.egg-info) stay out of
    # the checkout.
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    # Links kept as links: the build itself follows nt_llm/resources/eval to eval/, as in the checkout.
    for name in ("nt_llm", "eval"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(root), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (path,) = root.glob("nt_llm-*.whl")
    return path


def test_the_wheel_carries_the_package_data_and_console_scripts(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    # Every file of eval/, under the link's name.
    eval_files = {f"nt_llm/resources/eval/{p.relative_to(REPO / 'eval')}" for p in (REPO / "eval").rglob("*.yaml")}
    assert len(eval_files) >= 2 and {"nt_llm/resources/models/130m.yaml", *eval_files} <= names
    assert {"nt_llm/cli/__init__.py", "nt_llm/cli/export.py", "nt_llm/export/__init__.py"} <= names
    assert "nt_llm/study/reproduce.py" in names and "nt_llm/zeroshot/run.py" in names
    assert not any(n.startswith(("tests/", "bench/", "recipes/", "eval/")) for n in names)
    assert "nt-llm = nt_llm.cli:main" in scripts and "nt-export = nt_llm.cli.export:main" in scripts


def test_installed_wheel_builds_the_130m_config_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    # nt_llm from the wheel, not from the checkout's editable install.
    assert Path(found["file"]).is_relative_to(site)
    assert Path(found["templates"]).is_relative_to(site) and Path(found["paper_group"]).is_relative_to(site)
    assert Path(found["paper_group"]).read_text() == (REPO / "eval" / "paper" / "neurotrails_paper.yaml").read_text()
    assert "nt_piqa" in found["offline_tasks"]
    assert {"tiny", "130m", "350m", "1b", "cpu-4m"} <= set(found["sizes"])
    assert (found["layers"], found["head_layers"]) == (12, 8)
    assert found["paper_tasks"] == ["boolq", "arc_easy", "piqa", "hellaswag", "openbookqa", "winogrande"]
