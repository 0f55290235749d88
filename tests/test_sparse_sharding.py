"""The pieces of the sharded mask update that one process can check: owner assignment, bit packing,
per-tensor random streams, the per-rank work after an update, and reading DST states of the old layout.

The two-process checks (masks equal across ranks and equal to a single-process update, each rank
gathering only the tensors it owns) are in tests/test_sparse_distributed.py.
"""

import logging

import pytest
import torch
from helpers.sparse import LinearStack, train_steps
from torch import nn

from nt_llm.sparse import DynamicSparsity, SparsityConfig, assign_owners
from nt_llm.sparse.dst import stream_seed
from nt_llm.sparse.engines import (
    Engine,
    LocalEngine,
    _pack_bits_tensor,
    _unpack_bits_tensor,
    flat_nonzero,
    pack_bits,
    unpack_bits,
)


def _config(**kw) -> SparsityConfig:
    base = dict(density=0.5, include=("blocks.*.weight", "head.weight"), update_frequency=2, total_steps=20)
    return SparsityConfig(**(base | kw))


def test_owners_balance_size_deterministically():
    sizes = [4096, 1024, 1024, 1024, 1024, 512, 512, 100, 50, 7]
    owners = assign_owners(sizes, 2)
    assert owners == assign_owners(sizes, 2)
    loads = [sum(s for s, o in zip(sizes, owners, strict=True) if o == r) for r in range(2)]
    assert max(loads) - min(loads) <= max(sizes)
    assert loads == [4708, 4665]  # largest first, each to the least-loaded rank
    assert assign_owners(sizes, 1) == [0] * len(sizes)
    # more ranks than tensors: each tensor its own rank, the rest idle
    assert sorted(assign_owners([3, 2, 1], 5)) == [0, 1, 2]
    eight = assign_owners([1000] * 64, 8)
    assert [eight.count(r) for r in range(8)] == [8] * 8
    with pytest.raises(ValueError, match="world_size"):
        assign_owners([1], 0)


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 1000])
def test_bit_packing_round_trips(numel):
    g = torch.Generator().manual_seed(numel)
    mask = torch.rand(numel, generator=g) < 0.4
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (numel + 7) // 8
    assert torch.equal(unpack_bits(packed, torch.Size([numel])), mask)
    assert torch.equal(unpack_bits(pack_bits(mask.view(1, -1)), torch.Size([1, numel])), mask.view(1, -1))


def test_cpu_bit_packing_has_the_layout_of_the_tensor_path():
    """The CPU packs with numpy, other devices with tensor arithmetic: both must write the same bytes, since a
    mask packed by one is unpacked by the other nowhere, but a layout change would be silent."""
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(3, 1001, generator=g) < 0.7
    packed = pack_bits(mask)
    assert torch.equal(packed, _pack_bits_tensor(mask))
    assert torch.equal(_unpack_bits_tensor(packed, mask.shape), mask)
    # a non-contiguous mask packs in its logical (row-major) order
    assert torch.equal(pack_bits(mask.t()), _pack_bits_tensor(mask.t().contiguous()))
    assert torch.equal(pack_bits(torch.tensor([True, False, False, True])), torch.tensor([9], dtype=torch.uint8))


def test_flat_nonzero_matches_torch():
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(37, 53, generator=g) < 0.1
    for m in (mask, mask.t(), torch.zeros(5, dtype=torch.bool)):
        got = flat_nonzero(m)
        assert got.dtype == torch.int64
        assert torch.equal(got, m.reshape(-1).nonzero().squeeze(1))


def _adam_stepped(seed: int) -> tuple[nn.Linear, torch.optim.Optimizer, torch.Tensor]:
    """A linear layer, masked, after one Adam step on masked gradients: weights and moments zero off the mask."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(16, 12, bias=False)
    mask = torch.rand(layer.weight.shape, generator=g) < 0.8
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    with torch.no_grad():
        layer.weight.mul_(mask)
    layer.weight.grad = torch.randn(layer.weight.shape, generator=g) * mask
    opt.step()
    return layer, opt, mask


def test_clear_dropped_zeroes_exactly_the_dropped_positions():
    layer, opt, old = _adam_stepped(0)
    g = torch.Generator().manual_seed(7)
    new = old.clone()
    new.view(-1)[torch.randperm(new.numel(), generator=g)[:40]] ^= True  # some positions leave, some arrive
    dropped = old > new
    assert dropped.any() and (new > old).any()
    weight = layer.weight
    before = [weight.detach().clone()] + [v.clone() for v in opt.state[weight].values() if v.shape == weight.shape]
    # a value planted where the mask stays off shows the update touches nothing it need not
    with torch.no_grad():
        weight[~old & ~new] = 5.0
    before[0][~old & ~new] = 5.0

    LocalEngine(layer, opt).clear_dropped([weight], [dropped])
    after = [weight.detach()] + [v for v in opt.state[weight].values() if v.shape == weight.shape]
    assert len(after) == 3  # the weight and both Adam moments
    for b, a in zip(before, after, strict=True):
        assert torch.count_nonzero(a[dropped]) == 0
        assert torch.equal(a[~dropped], b[~dropped])


def test_the_whole_tensor_default_clears_the_same_as_the_index_lists():
    """Engine.clear_dropped (what the sharded engines run) and LocalEngine's override agree on a masked state."""
    results = []
    for clear in (Engine.clear_dropped, LocalEngine.clear_dropped):
        layer, opt, old = _adam_stepped(3)
        new = old.clone()
        new[:3] = ~new[:3]
        clear(LocalEngine(layer, opt), [layer.weight], [old > new])
        results.append([layer.weight.detach()] + list(opt.state[layer.weight].values()))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_owners_split_only_the_tensors_an_update_works_on():
    """Tensors that ERK makes dense have nothing to draw or update: they are given to no rank."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 2), nn.Linear(2, 64))
    sparsity = DynamicSparsity(model, SparsityConfig(density=0.9, include=("*.weight",), update_frequency=1))
    sparse = {n for n in sparsity.names if sparsity.targets[n] < sparsity.shapes[n].numel()}
    assert sparse and sparse != set(sparsity.names)  # the small layers are dense at this density
    assert set(sparsity.last_owners) == sparse and set(sparsity.last_owners.values()) == {0}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    sparsity.update_topology()
    assert set(sparsity.last_owners) == sparse


def test_stream_seeds_are_stable_across_processes_and_distinct():
    # a golden value: a salted hash() (different in every process) could not reproduce it
    assert stream_seed(0, "heads.0.lm_head.weight", 50) == 4203524773193500170
    seeds = {stream_seed(s, n, t) for s in (0, 1) for n in ("a.weight", "b.weight") for t in (0, 50, 100)}
    assert len(seeds) == 12
    assert all(0 <= s < 2**63 for s in seeds)


def test_masks_do_not_depend_on_tensor_order_or_neighbours():
    """A tensor's stream is its own: sparsifying one more tensor leaves the others' masks alone."""
    torch.manual_seed(0)
    model = LinearStack(3)
    few = DynamicSparsity(model, _config(include=("blocks.0.weight", "head.weight")))
    many = DynamicSparsity(model, _config(include=("blocks.*.weight", "head.weight"), distribution="uniform"))
    uniform_few = DynamicSparsity(model, _config(include=("blocks.0.weight", "head.weight"), distribution="uniform"))
    assert torch.equal(many.masks["head.weight"], uniform_few.masks["head.weight"])
    assert torch.equal(many.masks["blocks.0.weight"], uniform_few.masks["blocks.0.weight"])
    assert few.masks.keys() == {"blocks.0.weight", "head.weight"}


def _trained(steps: int) -> tuple[nn.Module, DynamicSparsity]:
    torch.manual_seed(0)
    model = LinearStack(3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sparsity = DynamicSparsity(model, _config(growth="random"), opt)
    train_steps(model, sparsity, opt, steps)
    return model, sparsity


def test_state_dict_has_the_current_layout_and_no_generator():
    _, sparsity = _trained(3)
    state = sparsity.state_dict()
    assert state["format"] == 2
    assert set(state) == {"format", "config", "step", "masks", "ever_active", "targets", "last_update"}


def test_old_layout_state_is_converted_with_a_warning(caplog):
    _, sparsity = _trained(3)
    old = sparsity.state_dict()
    del old["format"]
    old["generator"] = torch.Generator().manual_seed(0).get_state()  # what format 1 saved
    _, fresh = _trained(0)
    with caplog.at_level(logging.WARNING, logger="nt_llm.sparse.dst"):
        fresh.load_state_dict(old)
    assert "old layout" in caplog.text
    assert fresh.step == 3 and fresh.last_update.step == 2
    for name, mask in sparsity.masks.items():
        assert torch.equal(fresh.masks[name], mask)
        assert torch.equal(fresh.ever_active[name], sparsity.ever_active[name])
    assert fresh.counts == sparsity.counts and fresh.density == sparsity.density


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update(format=3), "format 3 is not supported"),
        (lambda s: s.pop("format"), "neither a 'format' nor a 'generator'"),
    ],
)
def test_unknown_state_layouts_are_refused(edit, message):
    _, sparsity = _trained(1)
    state = sparsity.state_dict()
    edit(state)
    with pytest.raises(ValueError, match=message):
        sparsity.load_state_dict(state)
