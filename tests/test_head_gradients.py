"""nt-llm head-gradients (nt_llm.study.head_gradients): agreement of the heads' gradients on the shared weights."""

from pathlib import Path

import pytest
import torch
from helpers.configs import tiny_size_file

from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config
from nt_llm.study import head_gradients


def tiny_model(tmp_path: Path, method: str) -> NeuroTrailsForCausalLM:
    size = tiny_size_file(tmp_path)
    torch.manual_seed(0)
    return NeuroTrailsForCausalLM(build_config(size, method, ensemble_size=3, head_layers=2, vocab_size=50))


def test_identical_heads_agree_and_random_heads_do_not(tmp_path) -> None:
    model = tiny_model(tmp_path, "treenet")
    ids = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids}
    fresh = head_gradients.agreement(head_gradients.head_gradients(model, batch))
    assert abs(fresh["mean_cosine"]) < 0.5 and fresh["alignment"] < 0.9
    with torch.no_grad():  # every head a copy of head 0: the same loss, the same gradient
        for head in model.heads[1:]:
            head.load_state_dict(model.heads[0].state_dict())
    same = head_gradients.agreement(head_gradients.head_gradients(model, batch))
    assert same["mean_cosine"] == pytest.approx(1.0, abs=1e-9) and same["alignment"] == pytest.approx(1.0, abs=1e-9)
    # The gradients are the shared weights' (embedding + backbone), not the heads'.
    shared = sum(p.numel() for p in head_gradients.shared_parameters(model))
    assert head_gradients.head_gradients(model, batch).shape == (3, shared)


def test_a_full_ensemble_has_nothing_to_compare(tmp_path) -> None:
    model = tiny_model(tmp_path, "full_ensemble")
    ids = torch.randint(0, 50, (1, 8))
    with pytest.raises(ValueError, match="shares no weights"):
        head_gradients.head_gradients(model, {"input_ids": ids, "labels": ids})


def test_the_method_choices_are_the_registered_methods_with_shared_blocks(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        head_gradients.main(["--method", "full_ensemble"])
    assert exit_.value.code == 2
    assert "invalid choice: 'full_ensemble' (choose from treenet, neurotrails)" in capsys.readouterr().err.replace(
        "'treenet', 'neurotrails'", "treenet, neurotrails"
    )
