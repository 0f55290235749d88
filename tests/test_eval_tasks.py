"""The eval/ folder: lm-eval indexes its task definitions directly (``lm_eval --include_path eval/paper``), and
nt_llm reads the same files through the package (nt_llm/resources/eval links to it; tests/test_wheel.py checks that
a wheel carries them). Index only: lm-eval builds a task by loading its data from the Hub."""

from pathlib import Path

import pytest
import yaml
from lm_eval.tasks import TaskManager

from nt_llm.zeroshot import tasks as prepare_tasks

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO / "eval"
PAPER_GROUP = "neurotrails_paper"


def stock_task_dirs() -> list[Path]:
    """The folders of the stock lm-eval tasks that the offline templates name: indexing these few takes
    milliseconds, indexing all of lm_eval/tasks about half a minute."""
    stock = prepare_tasks.stock_tasks_dir()
    return sorted({(stock / task.stock_yaml).parent for task in prepare_tasks.TASKS})


def test_lm_eval_finds_the_paper_group_and_its_stock_tasks() -> None:
    manager = TaskManager(include_path=[*stock_task_dirs(), EVAL / "paper"], include_defaults=False)
    assert PAPER_GROUP in manager.all_groups
    entry = manager.task_index[PAPER_GROUP]
    assert Path(entry.yaml_path).resolve() == EVAL / "paper" / f"{PAPER_GROUP}.yaml"
    assert tuple(entry.cfg["task"]) == prepare_tasks.PAPER_TASKS
    # Each member is a stock task that lm-eval ships, so the group runs as `--tasks neurotrails_paper`.
    assert set(prepare_tasks.PAPER_TASKS) <= set(manager.all_subtasks)


def test_the_whole_folder_indexes_without_errors_and_only_the_group_is_a_task() -> None:
    # The offline templates are nt_llm's own format: lm-eval skips them, so `--include_path eval` works too.
    assert TaskManager(include_path=EVAL, include_defaults=False).all_tasks == [PAPER_GROUP]


def test_the_package_reads_eval_through_its_link() -> None:
    assert Path(str(prepare_tasks.TEMPLATES)).resolve() == EVAL / "offline_tasks.yaml"
    assert Path(str(prepare_tasks.PAPER_GROUP)).resolve() == EVAL / "paper" / f"{PAPER_GROUP}.yaml"
    paper = {task.stock_name for task in prepare_tasks.TASKS if prepare_tasks.PAPER_TAG in task.tags}
    assert paper == set(prepare_tasks.PAPER_TASKS)


def test_a_paper_task_without_an_offline_template_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group = yaml.safe_load((EVAL / "paper" / f"{PAPER_GROUP}.yaml").read_text(encoding="utf-8"))
    group["task"].append("lambada_openai")
    path = tmp_path / "group.yaml"
    path.write_text(yaml.safe_dump(group))
    monkeypatch.setattr(prepare_tasks, "PAPER_GROUP", path)
    with pytest.raises(prepare_tasks.PrepareError, match=r"names task\(s\) \['lambada_openai'\] that"):
        prepare_tasks.load_templates()
