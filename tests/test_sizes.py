"""The CPU-study sizes: with the 4k tokenizer the decoder blocks, not the vocabulary, hold most of the weights."""

from pathlib import Path

import pytest

from nt_llm.modeling import NeuroTrailsForCausalLM
from nt_llm.modeling.sizes import build_config

# The share of a path's weights (embedding, blocks, final norm, LM head) in its decoder blocks, as the size
# files state it.
CPU_SIZES = {"cpu-2m": 0.535, "cpu-4m": 0.628, "cpu-7m": 0.693}


def block_share(model: NeuroTrailsForCausalLM) -> float:
    """Parameters in decoder blocks / all parameters (a dense model is one path)."""
    counts = {"blocks": 0, "other": 0}
    for name, param in model.named_parameters():
        counts["blocks" if ".layers." in name else "other"] += param.numel()
    return counts["blocks"] / (counts["blocks"] + counts["other"])


@pytest.mark.parametrize("size, share", CPU_SIZES.items())
def test_cpu_sizes_put_most_weights_in_the_blocks(size: str, share: float) -> None:
    config = build_config(size, "dense")
    assert config.vocab_size == 4096 and config.num_hidden_layers == 6
    measured = block_share(NeuroTrailsForCausalLM(config))
    assert measured >= 0.5
    assert measured == pytest.approx(share, abs=0.005)


def test_neurotrails_cpu_size_splits_two_thirds_of_the_blocks_into_heads() -> None:
    config = build_config("cpu-4m", "neurotrails", ensemble_size=3)
    model = NeuroTrailsForCausalLM(config)
    head_blocks = {
        name.split(".layers.")[0] + "." + name.split(".layers.")[1].split(".")[0]
        for name, _ in model.named_parameters()
        if name.startswith("heads.") and ".layers." in name
    }
    assert config.head_layers == 4 and len(head_blocks) == 3 * 4
    # Against the 32k paper sizes, whose tiny and 9m configurations are nearly all vocabulary.
    assert block_share(NeuroTrailsForCausalLM(build_config("9m", "dense"))) < 0.1


def test_sizes_ship_inside_the_package_and_a_path_still_works(tmp_path) -> None:
    import yaml

    import nt_llm
    from nt_llm.modeling.sizes import SIZES_DIR, available_sizes, load_size

    # Package data, not a folder beside the source tree: an installed wheel has no recipes/ (tests/test_wheel.py).
    assert str(SIZES_DIR).startswith(str(Path(nt_llm.__file__).parent))
    assert {"tiny", "130m", "350m", "cpu-4m"} <= set(available_sizes())
    path = tmp_path / "size.yaml"
    path.write_text(yaml.safe_dump({**load_size("tiny"), "hidden_size": 32}))
    assert load_size(str(path))["hidden_size"] == 32
    with pytest.raises(FileNotFoundError, match="known sizes: 100m, 130m"):
        load_size("13m")


def test_an_override_that_contradicts_the_method_is_named() -> None:
    assert not build_config("tiny", "full_ensemble", share_embeddings=False).share_embeddings  # agrees: fine
    with pytest.raises(
        ValueError, match=r"method 'full_ensemble' sets share_embeddings=False, got share_embeddings=True"
    ):
        build_config("tiny", "full_ensemble", share_embeddings=True)


def test_one_path_as_a_plain_llama_config() -> None:
    config = build_config("tiny", "neurotrails", ensemble_size=3, head_layers=2, rms_norm_eps=1e-5)
    llama = config.to_llama_config()
    assert type(llama).__name__ == "LlamaConfig" and llama.model_type == "llama"
    assert not {"ensemble_size", "head_layers", "share_embeddings"} & set(llama.to_dict())
    assert (llama.num_hidden_layers, llama.hidden_size, llama.rms_norm_eps) == (4, 64, 1e-5)
