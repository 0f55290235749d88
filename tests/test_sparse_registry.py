"""Registries: criteria, schedules, distributions and engines are looked up by name, and a new one is
one class plus one registration that SparsityConfig accepts and DynamicSparsity then uses."""

import pytest
import torch
from helpers.sparse import LinearStack, train_steps
from torch import nn

from nt_llm.sparse import (
    DISTRIBUTIONS,
    ENGINES,
    GROWTH_CRITERIA,
    PRUNE_CRITERIA,
    SCHEDULES,
    DynamicSparsity,
    EngineSpec,
    GrowthCriterion,
    LocalEngine,
    SparsityConfig,
    detect_engine,
)
from nt_llm.sparse.criteria import select_top


def _config(**kw) -> SparsityConfig:
    base = dict(density=0.5, include=("blocks.*.weight", "head.weight"), update_frequency=2, total_steps=10)
    return SparsityConfig(**(base | kw))


def _train(model: nn.Module, sparsity: DynamicSparsity, steps: int) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sparsity.engine.optimizer = opt
    train_steps(model, sparsity, opt, steps)


def test_built_in_names_are_registered():
    assert {"magnitude", "soft_magnitude"} <= set(PRUNE_CRITERIA.names())
    assert {"random", "gradient"} <= set(GROWTH_CRITERIA.names())
    assert GROWTH_CRITERIA.get("gradient").needs_dense_grad and not GROWTH_CRITERIA.get("random").needs_dense_grad
    assert {"constant", "linear", "cosine"} <= set(SCHEDULES.names())
    assert {"uniform", "erk"} <= set(DISTRIBUTIONS.names())
    assert {"deepspeed", "fsdp2", "local"} <= set(ENGINES.names())


@pytest.mark.parametrize(
    ("field", "known"),
    [("prune", "soft_magnitude"), ("growth", "gradient"), ("distribution", "erk"), ("density_schedule", "cosine")],
)
def test_unknown_name_error_names_the_field_and_the_known_names(field, known):
    with pytest.raises(ValueError, match=rf"SparsityConfig\.{field} must be one of .*'{known}'.*got 'nope'"):
        SparsityConfig(**{field: "nope"})


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        GROWTH_CRITERIA.register("gradient")(GrowthCriterion)


class SmallestGradientGrowth(GrowthCriterion):
    """A toy cousin of RigL: grow where the dense gradient is smallest in magnitude."""

    needs_dense_grad = True
    seen: list = []

    def scores(self, grad, shape, device, generator):
        SmallestGradientGrowth.seen.append(grad is not None)
        return -grad.abs().float().to(device)


@pytest.fixture
def toy_growth():
    GROWTH_CRITERIA.register("smallest_gradient")(SmallestGradientGrowth)
    SmallestGradientGrowth.seen = []
    try:
        yield "smallest_gradient"
    finally:
        GROWTH_CRITERIA.unregister("smallest_gradient")


def test_a_registered_growth_criterion_is_used_end_to_end(toy_growth):
    torch.manual_seed(0)
    model = LinearStack()
    config = _config(growth=toy_growth, prune="magnitude", prune_rate=0.5, prune_rate_decay="constant")
    sparsity = DynamicSparsity(model, config)
    assert isinstance(sparsity.growth_criterion, SmallestGradientGrowth)
    _train(model, sparsity, 1)
    # the update before step 2: with the gradients and weights of that moment, the toy's choice
    g = torch.Generator().manual_seed(1)
    model(torch.randn(4, 8, generator=g)).square().mean().backward()
    before = {n: m.clone() for n, m in sparsity.masks.items()}
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    sparsity.before_optimizer_step()
    assert sparsity.last_update.step == 2 and sparsity.last_update.grown > 0
    assert SmallestGradientGrowth.seen == [True] * len(sparsity.records)  # dense grads were gathered for it
    for n, new in sparsity.masks.items():
        n_active = int(before[n].sum())
        kept = select_top(weights[n].abs(), before[n], n_active - int(0.5 * n_active))
        expected = kept | select_top(-grads[n].abs(), ~kept, int(new.sum()) - int(kept.sum()))
        assert torch.equal(new, expected), n
    # and once unregistered the name is unknown again
    GROWTH_CRITERIA.unregister(toy_growth)
    try:
        with pytest.raises(ValueError, match="SparsityConfig.growth"):
            _config(growth=toy_growth)
    finally:
        GROWTH_CRITERIA.register(toy_growth)(SmallestGradientGrowth)


def test_a_criterion_without_dense_grad_need_gets_none(toy_growth):
    class Blind(GrowthCriterion):
        grads: list = []

        def scores(self, grad, shape, device, generator):
            Blind.grads.append(grad)
            return torch.rand(shape, generator=generator, device=generator.device).to(device)

    GROWTH_CRITERIA.register("blind")(Blind)
    try:
        model = LinearStack()
        sparsity = DynamicSparsity(model, _config(growth="blind"))
        _train(model, sparsity, 2)
        assert Blind.grads == [None] * len(sparsity.records)
    finally:
        GROWTH_CRITERIA.unregister("blind")


def test_a_registered_schedule_drives_the_prune_rate():
    SCHEDULES.register("halfway")(lambda progress: 1.0 if progress < 0.5 else 0.0)
    try:
        sparsity = DynamicSparsity(
            LinearStack(), _config(prune_rate_decay="halfway", prune_rate=0.4, prune_rate_floor=0.1)
        )
        assert [sparsity.prune_rate(s) for s in (0, 4, 6, 10)] == pytest.approx([0.4, 0.4, 0.1, 0.1])
    finally:
        SCHEDULES.unregister("halfway")


def test_engine_detection_is_extensible():
    class Marked(LinearStack):
        pass

    class MarkedEngine(LocalEngine):
        pass

    assert type(detect_engine(Marked())).__name__ == "LocalEngine"  # the fallback
    ENGINES.register("marked")(EngineSpec(lambda m: isinstance(m, Marked), MarkedEngine))
    try:
        assert isinstance(detect_engine(Marked()), MarkedEngine)
        assert type(detect_engine(LinearStack())) is LocalEngine
    finally:
        ENGINES.unregister("marked")
