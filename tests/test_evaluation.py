"""nt_llm.evaluation: chunked metrics equal the whole-batch computation, and `python -m nt_llm.evaluation` on
exported folders, checkpoints and text/jsonl/parquet files (numbers, single-head export, bad inputs)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from itertools import combinations, permutations
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from helpers.configs import tiny_config
from helpers.data import make_docs, write_jsonl
from helpers.training import tiny_recipe
from helpers.zero_shot import save_tiny_neurotrails

from nt_llm import export as nt_export
from nt_llm.cli.evaluate import main
from nt_llm.data import DataConfig, build_tokenizer, build_validation_set
from nt_llm.evaluation import ensemble, evaluate
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.train import train
from nt_llm.train.recipe import recipe_from_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


# ---- chunking ----------------------------------------------------------------------------------------------


def _tiny_model(heads: int = 3) -> NeuroTrailsForCausalLM:
    return NeuroTrailsForCausalLM(tiny_config(ensemble_size=heads, max_position_embeddings=32)).eval()


def _batches() -> list[dict[str, torch.Tensor]]:
    """Two batches of 4 rows of 12 tokens; rows padded at the end (attention 0, label -100), one row empty."""
    out = []
    for real in ([12, 12, 7, 12], [12, 3, 0, 12]):
        ids = torch.randint(0, 97, (4, 12))
        mask = (torch.arange(12)[None, :] < torch.tensor(real)[:, None]).long()
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return out


def _reference(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """The metrics written out from their definitions, each batch in one forward, in float64."""
    tokens, ensemble_nll, disagreements, kl = 0, 0.0, 0.0, 0.0
    head_nll = None
    for batch in batches:
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_head_logits=True)
        keep = batch["labels"][:, 1:] != -100
        target = batch["labels"][:, 1:][keep]
        head_logp = F.log_softmax(out.head_logits[:, :, :-1][:, keep].double(), dim=-1)  # [H, N, V]
        ens_logp = F.log_softmax(out.logits[:, :-1][keep].double(), dim=-1)
        tokens += target.numel()
        ensemble_nll += -ens_logp.gather(-1, target[:, None]).sum().item()
        nll = -head_logp.gather(-1, target.expand(len(head_logp), -1)[..., None]).sum(dim=(1, 2))
        head_nll = nll if head_nll is None else head_nll + nll
        top1 = head_logp.argmax(-1)
        heads = len(head_logp)
        disagreements += sum((top1[i] != top1[j]).sum().item() for i, j in combinations(range(heads), 2))
        kl += sum(
            (head_logp[i].exp() * (head_logp[i] - head_logp[j])).sum().item() for i, j in permutations(range(heads), 2)
        )
    head_losses = (head_nll / tokens).tolist()
    heads = len(head_losses)
    metrics = {
        "val_tokens": tokens,
        "ensemble_loss": ensemble_nll / tokens,
        "mean_head_loss": sum(head_losses) / heads,
        "ensemble_gain": sum(head_losses) / heads - ensemble_nll / tokens,
        **{f"head{h}_loss": loss for h, loss in enumerate(head_losses)},
    }
    if heads > 1:
        metrics["disagreement"] = disagreements / (tokens * heads * (heads - 1) / 2)
        metrics["pairwise_kl"] = kl / (tokens * heads * (heads - 1))
    return metrics


@pytest.mark.parametrize("chunk_tokens", [5, 12, 30, 4096])
def test_chunked_metrics_equal_the_whole_batch_computation(chunk_tokens: int) -> None:
    model, batches = _tiny_model(), _batches()
    got = evaluate(model, batches, CPU, chunk_tokens=chunk_tokens)
    want = _reference(model, batches)
    assert got["val_tokens"] == want["val_tokens"] == 11 + 11 + 6 + 11 + 11 + 2 + 0 + 11
    for key, value in want.items():
        # The gain is a difference of two losses: its error is measured on their scale.
        scale = {"ensemble_gain": want["mean_head_loss"]}.get(key, abs(value))
        assert abs(got[key] - value) <= 1e-6 * scale, key
    assert got["disagreement"] > 0 and got["pairwise_kl"] > 0  # the comparison is not between zeros


def test_one_head_metrics_are_its_own_and_have_no_pairs() -> None:
    """The dense model: its single head's loss is the ensemble's (computed once), and no pairwise metric exists."""
    model, batches = _tiny_model(heads=1), _batches()
    got, want = evaluate(model, batches, CPU, chunk_tokens=7), _reference(model, batches)
    assert set(got) == set(want) | {"ensemble_ppl", "head0_ppl"}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert got["ensemble_loss"] == got["head0_loss"] and got["ensemble_gain"] == 0.0


def test_chunks_bound_the_forward_rows_and_the_fp32_slabs(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny_model()
    forward_rows: list[int] = []
    slab_tokens: list[int] = []
    model.register_forward_pre_hook(
        lambda _, args, kwargs: forward_rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    chunk_totals = ensemble._chunk_totals

    def recording(head_logits: torch.Tensor, *args: torch.Tensor) -> ensemble.EnsembleTotals:
        slab_tokens.append(head_logits.shape[1])
        return chunk_totals(head_logits, *args)

    monkeypatch.setattr(ensemble, "_chunk_totals", recording)
    evaluate(model, _batches(), CPU, chunk_tokens=25)  # 2 rows of 12 tokens per forward
    assert forward_rows == [2, 2, 2, 2]
    assert max(slab_tokens) <= 25 and sum(slab_tokens) == 63
    forward_rows.clear()
    evaluate(model, _batches(), CPU, chunk_tokens=5)  # a chunk shorter than a row: one row per forward
    assert forward_rows == [1] * 8


def test_the_trainer_call_still_works_and_bad_chunks_are_refused() -> None:
    model, batches = _tiny_model(), _batches()
    model.train()
    # What nt_llm/train/trainer.py passes: no chunk_tokens (the device's default), an all_reduce_sum.
    metrics = evaluate(model, batches, CPU, all_reduce_sum=lambda t: t * 1, autocast_dtype=None)
    assert model.training and metrics["ensemble_loss"] == pytest.approx(_reference(model, batches)["ensemble_loss"])
    with pytest.raises(ValueError, match="chunk_tokens must be an integer >= 1, got 0"):
        evaluate(model, batches, CPU, chunk_tokens=0)


# ---- the command line --------------------------------------------------------------------------------------

DOCS = make_docs(40, seed=7)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random NeuroTrails folder of 2 heads, context 128, with its byte-level tokenizer."""
    return save_tiny_neurotrails(tmp_path_factory.mktemp("eval_model") / "model")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same documents as a text file (blank-line paragraphs), jsonl (under 'body') and parquet."""
    root = tmp_path_factory.mktemp("eval_data")
    text = root / "docs.txt"
    text.write_text("\n\n".join(DOCS), encoding="utf-8")
    Dataset.from_dict({"text": DOCS}).to_parquet(str(root / "docs.parquet"))
    return {
        "txt": text,
        "jsonl": write_jsonl(root / "docs.jsonl", DOCS, field="body"),
        "parquet": root / "docs.parquet",
    }


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().out


def test_cli_numbers_equal_evaluate_on_the_same_batches(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    code, stdout = _cli(
        [
            model_dir,
            data["jsonl"],
            "--text-field",
            "body",
            "--max-tokens",
            200,
            "--seq-len",
            16,
            "--batch-size",
            3,
            "--output",
            out,
        ],
        capsys,
    )
    assert code == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    cfg = DataConfig(
        source="files",
        train_files=[str(data["jsonl"])],
        validation_files=[str(data["jsonl"])],
        text_field="body",
        tokenizer=str(model_dir),
        seq_len=16,
        batch_size=3,
        validation_tokens=200,
    )
    model = NeuroTrailsForCausalLM.from_pretrained(model_dir)
    direct = evaluate(model, build_validation_set(cfg, build_tokenizer(cfg)), CPU)
    assert report["metrics"] == pytest.approx(direct, rel=1e-12)
    # 200 packed tokens in rows of 16: 13 rows, whose first tokens are never predicted.
    assert report["metrics"]["val_tokens"] == 200 - 13
    assert report["heads"] == 2 and report["seq_len"] == 16 and report["step"] is None
    assert f"| head 1 | {direct['head1_loss']:.4f} | {direct['head1_ppl']:.2f} |" in stdout
    assert f"| ensemble of 2 heads (averaged logits) | {direct['ensemble_loss']:.4f} |" in stdout
    assert f"| disagreement (top-1, over head pairs) | {direct['disagreement']:.4f} |" in stdout


def test_text_jsonl_and_parquet_of_the_same_documents_agree(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {}
    for kind, path in data.items():
        out = tmp_path / f"{kind}.json"
        field = ["--text-field", "body"] if kind == "jsonl" else []
        code, _ = _cli([model_dir, path, *field, "--output", out], capsys)
        assert code == 0, kind
        results[kind] = json.loads(out.read_text(encoding="utf-8"))
    # Whole files by default, in rows of the folder's context (128 tokens).
    assert {r["seq_len"] for r in results.values()} == {128}
    assert results["txt"]["metrics"] == pytest.approx(results["jsonl"]["metrics"], rel=1e-9)
    assert results["parquet"]["metrics"] == pytest.approx(results["jsonl"]["metrics"], rel=1e-9)


def test_per_head_perplexity_of_a_single_head_export(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single = nt_export.export(model_dir, tmp_path / "head1", nt_export.ExportOptions(single_head=1)).out
    assert json.loads((single / "config.json").read_text())["model_type"] == "llama"
    reports = {}
    for name, folder in (("ensemble", model_dir), ("single", single)):
        code, stdout = _cli([folder, data["txt"], "--output", tmp_path / f"{name}.json"], capsys)
        assert code == 0
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())["metrics"]
    single_metrics = reports["single"]
    assert set(single_metrics) == {
        "val_tokens",
        "ensemble_loss",
        "ensemble_ppl",
        "mean_head_loss",
        "ensemble_gain",
        "head0_loss",
        "head0_ppl",
    }
    # One head: its loss is the model's (two roundings of the same logits), nothing to gain from averaging.
    assert single_metrics["head0_ppl"] == pytest.approx(single_metrics["ensemble_ppl"], rel=1e-6)
    assert abs(single_metrics["ensemble_gain"]) < 1e-6
    # The exported head alone scores what it scored inside the ensemble.
    assert single_metrics["head0_ppl"] == pytest.approx(reports["ensemble"]["head1_ppl"], rel=1e-5)
    assert single_metrics["val_tokens"] == reports["ensemble"]["val_tokens"]
    assert "| model (one head) |" in stdout and "disagreement" not in stdout


def test_checkpoint_and_run_folder_evaluate_like_their_export(
    tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tiny_recipe(tmp_path, optim={"max_steps": 2}, eval={"every": 2}, checkpoint={"every": 2})
    train(recipe_from_dict(recipe))
    run = tmp_path / "run"
    exported = nt_export.export(run, tmp_path / "export").out
    reports = {}
    for name, model in (("run", run), ("step", run / "checkpoints" / "step_2"), ("export", exported)):
        code, _ = _cli([model, data["txt"], "--max-tokens", 300, "--output", tmp_path / f"{name}.json"], capsys)
        assert code == 0, name
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert reports["run"] == {**reports["step"], "model": str(run)}
    assert reports["step"]["step"] == 2 and reports["step"]["heads"] == 3
    # The checkpoint's rows are its training seq_len (16), not its size's 64 positions; so are the export's.
    assert reports["step"]["seq_len"] == reports["export"]["seq_len"] == recipe["data"]["seq_len"]
    assert reports["step"]["metrics"] == pytest.approx(reports["export"]["metrics"], rel=1e-6)


# ---- bad inputs --------------------------------------------------------------------------------------------


def _refused(argv: list[object], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="nt_llm.cli.evaluate"):
        code, stdout = _cli([str(a) for a in argv], capsys)
    assert code == 2 and stdout == ""
    return caplog.text


def test_bad_inputs_exit_2_naming_the_problem(
    model_dir: Path,
    data: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "nowhere.txt"
    assert str(missing) in _refused([model_dir, missing], caplog, capsys)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert f"{empty} is empty" in _refused([model_dir, empty], caplog, capsys)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n\n")
    assert str(blank) in _refused([model_dir, blank], caplog, capsys)
    assert "'text' not found" in _refused([model_dir, data["jsonl"]], caplog, capsys)  # its field is 'body'
    odd = tmp_path / "notes.dat"
    odd.write_text("Some text in a file whose name gives no format.")
    message = _refused([model_dir, odd], caplog, capsys)
    assert str(odd) in message and "--format" in message
    no_model = tmp_path / "no_model"
    assert f"model {no_model} does not exist" in _refused([no_model, data["txt"]], caplog, capsys)
    assert f"model {data['txt']} is a file" in _refused([data["txt"], data["txt"]], caplog, capsys)
    not_model = tmp_path / "not_a_model"
    not_model.mkdir()
    (not_model / "notes.txt").write_text("hello")
    assert f"{not_model} is not a NeuroTrails checkpoint" in _refused([not_model, data["txt"]], caplog, capsys)
    bad_config = tmp_path / "bad_config"
    bad_config.mkdir()
    (bad_config / "config.json").write_text('{"model_type": "no-such-architecture"}')
    assert str(bad_config) in _refused([bad_config, data["txt"]], caplog, capsys)


def test_module_entry_point_exits_2_on_a_missing_file(model_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.parquet"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "nt_llm.evaluation", str(model_dir), str(missing)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert str(missing) in done.stderr and "Traceback" not in done.stderr and done.stdout == ""


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    for option in (
        "MODEL",
        "FILE",
        "--max-tokens",
        "--batch-size",
        "--seq-len",
        "--text-field",
        "--output",
        "--format",
        "--device",
        "--chunk-tokens",
        "step_<N>",
        "parquet",
    ):
        assert option in text, option
