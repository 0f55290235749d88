"""nt_llm.export: from a tiny trained checkpoint to a standalone folder, its card, its errors and its push."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from helpers.configs import tiny_size_file
from helpers.no_nt_llm import check_loads_without_nt_llm
from helpers.training import SEQ_LEN, tiny_recipe
from helpers.zero_shot import save_tiny_llama, save_tiny_neurotrails
from safetensors.torch import load_file, save_file

from nt_llm import export as nt_export
from nt_llm import hub
from nt_llm.checkpoint import Checkpoint
from nt_llm.cli import export as export_cli
from nt_llm.model_card import CardInfo, ParamCounts, build_model_card, training_record
from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.train import train
from nt_llm.train.recipe import recipe_from_dict
from nt_llm.trained import TrainedModelError

HEADS = 3
TOKEN = "hf_NeverLogMe0123456789"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("export_run")
    # 3 heads of 2 blocks over 1 shared block, half the heads' weights masked; checkpoints at steps 2 and 4.
    recipe = tiny_recipe(tmp, optim={"max_steps": 4}, eval={"every": 2}, checkpoint={"every": 2})
    assert recipe["data"]["seq_len"] == SEQ_LEN and recipe["model"]["ensemble_size"] == HEADS
    seen: list[tuple[int, bool]] = []  # what a checkpoint callback sees: complete checkpoints, masks written
    result = train(recipe_from_dict(recipe), on_checkpoint=[lambda c: seen.append((c.step, c.masks_file.is_file()))])
    assert result.step == 4 and result.checkpoint == tmp / "run" / "checkpoints" / "step_4"
    assert seen == [(2, True), (4, True)]
    return tmp / "run"


@pytest.fixture(scope="module")
def step_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "step_4"


@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> nt_export.ExportResult:
    """The run exported whole (from the run folder: its newest checkpoint)."""
    return nt_export.export(run_dir, tmp_path_factory.mktemp("exports") / "ensemble")


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _metric_labels(card: str) -> list[str]:
    """The first column of the card's perplexity table, header left out."""
    table = card.split("## Evaluation at export")[1].split("## Parameters")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return [row[2:].split(" | ")[0] for row in rows[1:]]


# ---- the exported folder stands alone -------------------------------------------------------------------


def test_exports_load_without_nt_llm_and_match_the_training_model(
    step_dir: Path, exported: nt_export.ExportResult, tmp_path: Path
) -> None:
    trained = NeuroTrailsForCausalLM.from_pretrained(step_dir / "model").eval()
    ids = torch.randint(3, trained.config.vocab_size, (2, SEQ_LEN))
    eos = trained.config.eos_token_id
    ids[:, SEQ_LEN // 2] = eos  # a document boundary, as in packed training: its trained row must be exported
    with torch.no_grad():
        out = trained(ids, output_head_logits=True)
    subset = nt_export.export(step_dir, tmp_path / "subset", nt_export.ExportOptions(heads=(2, 0)))
    single = nt_export.export(step_dir, tmp_path / "single", nt_export.ExportOptions(single_head=1))
    assert (subset.kind, subset.heads, single.kind, single.heads) == ("subset", (2, 0), "single_head", (1,))
    reference = {
        "ids": ids,
        "logits": out.logits,
        "subset": out.head_logits[[2, 0]].mean(0),
        "single": out.head_logits[1],
        "eos": eos,
    }
    check_loads_without_nt_llm(tmp_path, [exported.out, subset.out, single.out], reference)


def test_a_single_head_export_has_a_plain_llama_config(
    exported: nt_export.ExportResult, step_dir: Path, tmp_path: Path
) -> None:
    single = nt_export.export(step_dir, tmp_path / "single", nt_export.ExportOptions(single_head=0))
    written = json.loads((single.out / "config.json").read_text())
    trained = json.loads((exported.out / "config.json").read_text())
    plain = json.loads((save_tiny_llama(tmp_path / "plain") / "config.json").read_text())
    # A saved LlamaForCausalLM's keys exactly: none of the ensemble's (ensemble_size, head_layers, share_embeddings,
    # auto_map), nothing missing.
    assert set(written) == set(plain)
    assert written["model_type"] == "llama" and written["architectures"] == ["LlamaForCausalLM"]
    shape = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "rope_parameters")
    assert {k: written[k] for k in shape} == {k: trained[k] for k in shape}


def test_folder_layout_config_and_context(exported: nt_export.ExportResult, step_dir: Path) -> None:
    out = exported.out
    for name in (
        "config.json",
        "configuration_neurotrails.py",
        "modeling_neurotrails.py",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "README.md",
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_neurotrails.NeuroTrailsForCausalLM"
    assert config["model_type"] == "neurotrails" and config["ensemble_size"] == HEADS
    # The training context, not the size file's 64: what lm-eval will use as max length.
    assert json.loads((step_dir / "model" / "config.json").read_text())["max_position_embeddings"] == 64
    assert config["max_position_embeddings"] == SEQ_LEN
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == SEQ_LEN
    assert not {"head_execution", "loss_reduction", "loss_chunk_size"} & set(config)  # training-only, or gone
    assert exported.step == 4 and exported.kind == "ensemble" and exported.heads == (0, 1, 2)
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_eos_row_trains_and_is_exported(run_dir: Path, exported: nt_export.ExportResult) -> None:
    # EOS joins every packed document: its row must learn, also when it is the pad id (the test tokenizer's).
    eos = json.loads((exported.out / "config.json").read_text())["eos_token_id"]
    weights = [load_file(run_dir / "checkpoints" / f"step_{step}" / "model" / "model.safetensors") for step in (2, 4)]
    rows = [state["embed_tokens.weight"][eos] for state in weights]
    assert rows[0].abs().sum() > 0 and not torch.equal(rows[0], rows[1])
    assert torch.equal(load_file(exported.out / "model.safetensors")["embed_tokens.weight"][eos], rows[1])


def test_max_position_embeddings_option(step_dir: Path, tmp_path: Path) -> None:
    result = nt_export.export(
        step_dir, tmp_path / "long", nt_export.ExportOptions(max_position_embeddings=48, single_head=0)
    )
    assert json.loads((result.out / "config.json").read_text())["max_position_embeddings"] == 48


def test_masked_weights_are_exact_zeros_and_counted(exported: nt_export.ExportResult, step_dir: Path) -> None:
    masks = Checkpoint(step_dir).masks()
    assert len(masks) == HEADS * (2 * 7 + 1)  # 7 projections per block, 2 blocks, 1 LM head, per head
    weights = load_file(exported.out / "model.safetensors")
    masked_out = 0
    for name, mask in masks.items():
        assert not weights[name][~mask].any(), name
        masked_out += int((~mask).sum())
    assert masked_out > 0.4 * sum(m.numel() for m in masks.values())  # density 0.5 on the heads
    nonzero = sum(int(torch.count_nonzero(w)) for w in weights.values())
    counts = exported.counts
    assert counts.nonzero == nonzero and counts.total == sum(w.numel() for w in weights.values())
    assert counts.total == counts.shared + sum(total for total, _ in counts.heads.values())
    assert counts.nonzero == counts.shared_nonzero + sum(nz for _, nz in counts.heads.values())
    assert exported.masked_nonzero == 0  # training left them at 0


def test_stray_weights_outside_the_mask_are_zeroed(
    step_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = shutil.copytree(step_dir, tmp_path / "step_4")
    name = "heads.1.lm_head.weight"
    mask = Checkpoint(copy).masks()[name]
    weights = load_file(copy / "model" / "model.safetensors")
    off = (~mask).nonzero()[0].tolist()
    weights[name][off[0], off[1]] = 0.5
    save_file(weights, copy / "model" / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING):
        result = nt_export.export(copy, tmp_path / "out")
    assert result.masked_nonzero == 1 and "1 weights outside the DST masks" in caplog.text
    assert load_file(result.out / "model.safetensors")[name][off[0], off[1]] == 0


def test_sharded_export_loads(step_dir: Path, tmp_path: Path) -> None:
    result = nt_export.export(step_dir, tmp_path / "sharded", nt_export.ExportOptions(max_shard_size="150KB"))
    index = json.loads((result.out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (result.out / "model.safetensors").exists()
    ids = torch.randint(3, 400, (1, 8))
    with torch.no_grad():
        expected = NeuroTrailsForCausalLM.from_pretrained(step_dir / "model").eval()(ids).logits
        got = NeuroTrailsForCausalLM.from_pretrained(result.out).eval()(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    hub.check_model_folder(result.out)


# ---- model card -----------------------------------------------------------------------------------------


def test_model_card_metadata_metrics_and_counts(exported: nt_export.ExportResult, step_dir: Path) -> None:
    meta = _front_matter(exported.out / "README.md")
    manifest = json.loads((step_dir / "checkpoint.json").read_text())
    assert meta["library_name"] == "transformers" and meta["license"] == "apache-2.0"
    assert meta["tags"] == ["neurotrails", "llama", "sparse", "ensemble", "dynamic-sparse-training"]
    # Local files: no Hub dataset id to claim, and a model-index result would need one.
    assert "datasets" not in meta and "model-index" not in meta
    text = (exported.out / "README.md").read_text()
    evaluation = manifest["eval"]
    assert f"| ensemble of {HEADS} heads (averaged logits) | {evaluation['ensemble_ppl']:.3f} |" in text
    for head in range(HEADS):
        assert f"| head {head} | {evaluation[f'head{head}_ppl']:.3f} |" in text
    counts = exported.counts
    assert f"| total | {counts.total:,} | {counts.nonzero:,} |" in text
    for head, (total, nonzero) in counts.heads.items():
        assert f"| head {head} | {total:,} | {nonzero:,} |" in text
    assert f"| shared (backbone, embedding) | {counts.shared:,} | {counts.shared_nonzero:,} |" in text
    assert "trust_remote_code=True" in text and f"Context length: {SEQ_LEN} tokens" in text
    assert f"- steps: 4, tokens: {manifest['tokens']}, processes: 1" in text and "density 0.5 (erk)" in text


def test_model_card_for_subsets_single_heads_and_c4(step_dir: Path, tmp_path: Path) -> None:
    result = nt_export.export(step_dir, tmp_path / "subset", nt_export.ExportOptions(heads=(2, 1), license="mit"))
    meta = _front_matter(result.out / "README.md")
    text = (result.out / "README.md").read_text()
    manifest = json.loads((step_dir / "checkpoint.json").read_text())
    # The 3-head ensemble's perplexity is not this model's; heads keep their trained names and say where they went.
    assert meta["license"] == "mit" and "| ensemble of" not in text
    assert _metric_labels(text) == ["head 2 (head 0 here)", "head 1"]
    assert f"| head 2 (head 0 here) | {manifest['eval']['head2_ppl']:.3f} |" in text
    total, nonzero = result.counts.heads[2]
    assert f"| head 2 (head 0 here) | {total:,} | {nonzero:,} |" in text
    assert "The `license: mit` field above covers this folder's weights" in text
    manifest["recipe"]["data"].update(source="c4", c4_path="allenai/c4", c4_name="en")
    counts = ParamCounts(total=10, nonzero=6, shared=4, shared_nonzero=4, heads={0: (6, 2)})
    card = build_model_card(
        CardInfo(
            kind="single_head",
            heads=(0,),
            source_heads=3,
            counts=counts,
            config={"max_position_embeddings": 256, "num_hidden_layers": 3},
            training=training_record(manifest),
        )
    )
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["datasets"] == ["allenai/c4"]
    result_meta = meta["model-index"][0]["results"][0]
    assert result_meta["dataset"]["type"] == "allenai/c4" and [m["name"] for m in result_meta["metrics"]] == ["head 0"]
    assert "C4 (`allenai/c4`): released under ODC-By 1.0" in card
    assert "trust_remote_code" not in card and "plain `LlamaForCausalLM`" in card
    assert "| total | 10 | 6 | 0.6000 |" in card
    with pytest.raises(ValueError, match="ParamCounts.nonzero"):
        ParamCounts(total=1, nonzero=2, shared=0, shared_nonzero=0)
    with pytest.raises(ValueError, match="CardInfo.kind"):
        CardInfo(kind="all", heads=(0,), source_heads=1, counts=counts, config={})


def test_bare_model_folder_exports_without_metrics(tmp_path: Path) -> None:
    folder = save_tiny_neurotrails(tmp_path / "bare")
    result = nt_export.export(folder, tmp_path / "out")
    assert result.step is None and result.heads == (0, 1)
    config = json.loads((result.out / "config.json").read_text())
    assert config["max_position_embeddings"] == 128  # no recipe: the folder's own context
    text = (result.out / "README.md").read_text()
    assert "No evaluation was recorded" in text and "model-index" not in _front_matter(result.out / "README.md")
    assert "came without a training record" in text and str(tmp_path) not in text


# ---- errors ---------------------------------------------------------------------------------------------


def test_clear_errors_for_bad_sources(tmp_path: Path, run_dir: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(TrainedModelError, match="does not exist"):
        nt_export.export(tmp_path / "missing", out)
    with pytest.raises(TrainedModelError, match="is not a NeuroTrails model .*'llama'"):
        nt_export.export(save_tiny_llama(tmp_path / "llama"), out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainedModelError, match="is not a NeuroTrails checkpoint"):
        nt_export.export(tmp_path / "empty", out)
    (tmp_path / "norun" / "checkpoints").mkdir(parents=True)
    with pytest.raises(TrainedModelError, match="has no complete checkpoint"):
        nt_export.export(tmp_path / "norun", out)
    torn = shutil.copytree(run_dir / "checkpoints" / "step_4", tmp_path / "step_4")
    (torn / "checkpoint.json").unlink()
    with pytest.raises(TrainedModelError, match="torn"):
        nt_export.export(torn, out)
    assert not out.exists()


def test_a_sparse_checkpoint_of_the_old_format_is_refused_with_what_to_do(step_dir: Path, tmp_path: Path) -> None:
    old = shutil.copytree(step_dir, tmp_path / "step_4")
    (old / "masks.safetensors").unlink()  # format 1 kept the masks only inside accelerate's state
    manifest = json.loads((old / "checkpoint.json").read_text())
    manifest.update(format_version=1, files=[f for f in manifest["files"] if f != "masks.safetensors"])
    (old / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(TrainedModelError, match=r"older nt_llm \(checkpoint format 1\).*resume"):
        nt_export.export(old, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert nt_export.export(old / "model", tmp_path / "bare").masked_nonzero == 0  # the way out it names


def test_clear_errors_for_bad_options(step_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(nt_export.ExportError, match=r"heads \[3\] out of range: the model has 3 heads"):
        nt_export.export(step_dir, tmp_path / "o", nt_export.ExportOptions(heads=(0, 3)))
    with pytest.raises(nt_export.ExportError, match="single_head .* out of range"):
        nt_export.export(step_dir, tmp_path / "o", nt_export.ExportOptions(single_head=5))
    with pytest.raises(nt_export.ExportError, match="twice"):
        nt_export.ExportOptions(heads=(1, 1))
    with pytest.raises(nt_export.ExportError, match="exclude each other"):
        nt_export.ExportOptions(heads=(1,), single_head=0)
    with pytest.raises(nt_export.ExportError, match="max_position_embeddings"):
        nt_export.ExportOptions(max_position_embeddings=0)
    with pytest.raises(nt_export.ExportError, match="'namespace/name'"):
        nt_export.PushOptions(repo_id="no-namespace")
    for out in (step_dir / "export", step_dir, step_dir.parent.parent):
        with pytest.raises(nt_export.ExportError, match="overlaps the checkpoint .*would lose the checkpoint"):
            nt_export.export(step_dir, out, nt_export.ExportOptions(overwrite=True))
    bare = save_tiny_neurotrails(tmp_path / "bare")
    with pytest.raises(nt_export.ExportError, match="overlaps the checkpoint"):
        nt_export.export(bare, bare, nt_export.ExportOptions(overwrite=True))
    assert (bare / "model.safetensors").is_file() and (step_dir / "checkpoint.json").is_file()
    assert not (tmp_path / "o").exists() and not (step_dir / "export").exists()


def test_existing_out_is_kept_unless_overwrite(step_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(nt_export.ExportError, match="exists; pass --overwrite"):
        nt_export.export(step_dir, out)
    assert (out / "mine.txt").read_text() == "keep me"
    nt_export.export(step_dir, out, nt_export.ExportOptions(overwrite=True, single_head=0))
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli(step_dir: Path, tmp_path: Path) -> None:
    assert export_cli.main([str(step_dir), str(tmp_path / "cli"), "--heads", "0,1", "--license", "mit"]) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["ensemble_size"] == 2
    assert export_cli.main([str(tmp_path / "missing"), str(tmp_path / "x")]) == export_cli.EXIT_BAD_INPUT
    with pytest.raises(SystemExit):
        export_cli.main([str(step_dir), str(tmp_path / "x"), "--heads", "a,b"])
    with pytest.raises(SystemExit):
        export_cli.main([str(step_dir), str(tmp_path / "x"), "--private"])  # needs --push-to-hub
    assert not (tmp_path / "x").exists()


# ---- Hub -------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("online")
def test_push_to_hub_after_export(
    step_dir: Path, tmp_path: Path, fake_api: mock.MagicMock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    push = nt_export.PushOptions(repo_id="me/nt-tiny", private=True, revision="exports")
    result = nt_export.export(step_dir, tmp_path / "out", push=push, token=TOKEN)
    assert result.commit.commit_url == "https://hub.example/commit/1"
    fake_api.assert_called_once_with(token=TOKEN)
    api = fake_api.return_value
    api.create_repo.assert_called_once_with("me/nt-tiny", repo_type="model", private=True, exist_ok=True)
    api.create_branch.assert_called_once_with("me/nt-tiny", branch="exports", repo_type="model", exist_ok=True)
    upload = api.upload_folder.call_args.kwargs
    assert upload["folder_path"] == str(result.out) and upload["revision"] == "exports"
    assert upload["commit_message"] == "nt_llm: step 4 (export)"
    assert TOKEN not in caplog.text


@pytest.mark.usefixtures("online")
def test_push_checkpoint_uploads_a_temporary_export(step_dir: Path, fake_api: mock.MagicMock) -> None:
    uploaded: list[dict] = []

    def upload_folder(**kwargs: object) -> mock.Mock:
        folder = Path(str(kwargs["folder_path"]))
        uploaded.append(
            {
                "folder": folder,
                "files": sorted(p.name for p in folder.iterdir()),
                "message": kwargs["commit_message"],
                "revision": kwargs["revision"],
            }
        )
        return mock.Mock(commit_url="u")

    fake_api.return_value.upload_folder.side_effect = upload_folder
    before = _snapshot(step_dir)
    nt_export.push_checkpoint(step_dir, "me/nt-tiny", private=False, revision=None, note="checkpoint")
    assert len(uploaded) == 1 and uploaded[0]["message"] == "nt_llm: step 4 (checkpoint)"
    assert {"README.md", "config.json", "model.safetensors", "modeling_neurotrails.py"} <= set(uploaded[0]["files"])
    assert not uploaded[0]["folder"].exists()  # the temporary export is cleaned up
    assert _snapshot(step_dir) == before


def test_offline_push_fails_at_once_and_writes_nothing(
    step_dir: Path, tmp_path: Path, fake_api: mock.MagicMock
) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set for every test by conftest
    before = _snapshot(step_dir)
    with pytest.raises(hub.HubPushError, match="HF_HUB_OFFLINE=1 is set"):
        nt_export.export(step_dir, tmp_path / "out", push=nt_export.PushOptions(repo_id="me/x"))
    with pytest.raises(hub.HubPushError, match="HF_HUB_OFFLINE=1 is set"):
        nt_export.push_checkpoint(step_dir, "me/x")
    code = export_cli.main([str(step_dir), str(tmp_path / "out"), "--push-to-hub", "me/x"])
    assert code == export_cli.EXIT_PUSH_FAILED
    fake_api.assert_not_called()
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
    assert _snapshot(step_dir) == before


@pytest.mark.usefixtures("online")
def test_failed_push_keeps_the_export(step_dir: Path, tmp_path: Path, fake_api: mock.MagicMock) -> None:
    fake_api.return_value.upload_folder.side_effect = ConnectionError("network is unreachable")
    with pytest.raises(hub.HubPushError, match="cannot reach the Hub"):
        nt_export.export(step_dir, tmp_path / "out", push=nt_export.PushOptions(repo_id="me/x"))
    hub.check_model_folder(tmp_path / "out")


@pytest.mark.parametrize("method", ["full_ensemble", "dense"])
def test_other_methods_export_subsets_and_single_heads(method: str, tmp_path: Path) -> None:
    # A full ensemble has an embedding per head and no backbone; dense is one head over every block.
    from helpers.zero_shot import tiny_tokenizer
    from transformers import LlamaForCausalLM

    from nt_llm.modeling.sizes import build_config

    tokenizer = tiny_tokenizer()
    size = tiny_size_file(tmp_path, num_hidden_layers=2, num_key_value_heads=2)
    config = build_config(
        size,
        method,
        ensemble_size=2,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    source = tmp_path / "source"
    NeuroTrailsForCausalLM(config).save_pretrained(source)
    tokenizer.save_pretrained(source)
    model = NeuroTrailsForCausalLM.from_pretrained(source).eval()
    last = config.ensemble_size - 1
    ids = torch.randint(4, config.vocab_size, (2, 9))
    with torch.no_grad():
        out = model(ids, output_head_logits=True)
        sub = nt_export.export(source, tmp_path / "sub", nt_export.ExportOptions(heads=(last,)))
        got = NeuroTrailsForCausalLM.from_pretrained(sub.out).eval()(ids).logits
        torch.testing.assert_close(got, out.head_logits[last], rtol=1e-5, atol=1e-5)
        single = nt_export.export(source, tmp_path / "single", nt_export.ExportOptions(single_head=last))
        llama = LlamaForCausalLM.from_pretrained(single.out).eval()
        torch.testing.assert_close(llama(ids).logits, out.head_logits[last], rtol=1e-5, atol=1e-5)
    shared = 0 if method == "full_ensemble" else config.vocab_size * config.hidden_size
    assert sub.counts.shared == shared and sub.counts.total == sum(p.numel() for p in llama.parameters())
