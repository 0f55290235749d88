"""DynamicSparsity in a single process: invariants over many updates, schedules, state_dict, stats."""

import io

import pytest
import torch
from torch import nn

from nt_llm.sparse import DynamicSparsity, SparsityConfig


class Stack(nn.Module):
    """A tiny named stack: embedding, blocks and a head, like the real model's naming scheme."""

    def __init__(self, vocab: int = 32, hidden: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        return self.head(h)


def _batches(n: int, seed: int = 0, vocab: int = 32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (4, 9), generator=g) for _ in range(n)]


def _loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[:, :-1])
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def _config(**kw) -> SparsityConfig:
    base = dict(
        density=0.4,
        include=("blocks.*.weight", "head.weight"),
        update_frequency=3,
        total_steps=30,
        prune_rate=0.3,
    )
    base.update(kw)
    return SparsityConfig(**base)


def _check_zeros(model: nn.Module, sparsity: DynamicSparsity) -> None:
    params = dict(model.named_parameters())
    for name, mask in sparsity.masks.items():
        assert torch.count_nonzero(params[name][~mask]) == 0, name


@pytest.mark.parametrize(
    ("prune", "growth", "density"),
    [
        ("magnitude", "gradient", 0.4),
        ("soft_magnitude", "gradient", 0.4),
        ("magnitude", "random", 0.4),
        ("soft_magnitude", "random", 0.4),
        # few inactive positions: per-step masking goes through index lists
        ("soft_magnitude", "gradient", 0.9),
    ],
)
def test_invariants_hold_after_every_step_and_update(prune, growth, density):
    model = Stack()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    config = _config(prune=prune, growth=growth, distribution="uniform" if density > 0.5 else "erk", density=density)
    sparsity = DynamicSparsity(model, config, opt)
    assert bool(sparsity.engine._inactive) == (density > 0.75)
    targets = dict(sparsity.targets)
    assert all(0 < t < sparsity.masks[n].numel() for n, t in targets.items())
    _check_zeros(model, sparsity)  # masks applied at construction
    updates = 0
    for ids in _batches(30):
        _loss(model, ids).backward()
        before = {n: m.clone() for n, m in sparsity.masks.items()}
        sparsity.before_optimizer_step()
        opt.step()
        sparsity.after_optimizer_step()
        opt.zero_grad()
        _check_zeros(model, sparsity)
        for n, m in sparsity.masks.items():
            assert int(m.sum()) == targets[n], n  # no drift
        if sparsity.is_update_step(sparsity.step):
            updates += 1
            assert sparsity.last_update.step == sparsity.step
            changed = sum(int((before[n] ^ m).sum()) for n, m in sparsity.masks.items())
            assert changed == sparsity.last_update.pruned + sparsity.last_update.grown
    assert updates == 10
    assert sparsity.stats()["sparsity/itop_rate"] > sparsity.density  # topology really moved


def test_grown_weights_start_at_zero_with_clean_optimizer_state():
    model = Stack()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sparsity = DynamicSparsity(model, _config(update_frequency=4, prune="magnitude", growth="gradient"), opt)
    params = dict(model.named_parameters())
    batches = _batches(4)
    for ids in batches[:3]:
        _loss(model, ids).backward()
        sparsity.before_optimizer_step()
        opt.step()
        sparsity.after_optimizer_step()
        opt.zero_grad()
    _loss(model, batches[3]).backward()
    old = {n: m.clone() for n, m in sparsity.masks.items()}
    sparsity.before_optimizer_step()  # the update happens here, before step 4
    assert sparsity.last_update.step == 4 and sparsity.last_update.grown > 0
    for n, new in sparsity.masks.items():
        grown, kept = new & ~old[n], new & old[n]
        state = opt.state[params[n]]
        assert torch.count_nonzero(params[n][grown]) == 0
        assert torch.count_nonzero(params[n].grad[~new]) == 0
        assert torch.count_nonzero(params[n].grad[grown]) > 0  # so step 4 trains the grown weights
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.count_nonzero(state[key][grown]) == 0
            assert torch.count_nonzero(state[key][~new]) == 0
            assert torch.count_nonzero(state[key][kept]) > 0  # kept weights keep their moments
        assert torch.count_nonzero(params[n][kept]) > 0
    opt.step()
    sparsity.after_optimizer_step()
    assert sparsity.step == 4
    _check_zeros(model, sparsity)


class DriftingSGD(torch.optim.SGD):
    """Moves every weight, zero-gradient ones too (like an optimizer with additive noise)."""

    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(1e-3)


def test_masking_gradients_is_not_enough_for_an_optimizer_that_moves_zero_grad_weights():
    model = Stack()
    opt = DriftingSGD(model.parameters(), lr=0.1)
    sparsity = DynamicSparsity(model, _config(update_frequency=100), opt)
    _loss(model, _batches(1)[0]).backward()
    sparsity.before_optimizer_step()
    opt.step()
    sparsity.after_optimizer_step()
    with pytest.raises(AssertionError):
        _check_zeros(model, sparsity)  # the default's documented limit


def test_mask_weights_every_step_restores_zeros_for_any_optimizer():
    model = Stack()
    opt = DriftingSGD(model.parameters(), lr=0.1)
    sparsity = DynamicSparsity(model, _config(update_frequency=2, mask_weights_every_step=True), opt)
    for ids in _batches(5):
        _loss(model, ids).backward()
        sparsity.before_optimizer_step()
        opt.step()
        sparsity.after_optimizer_step()
        opt.zero_grad()
        _check_zeros(model, sparsity)


def test_updates_follow_schedule_and_stop_step():
    cfg = _config(update_frequency=2, total_steps=20, end_fraction=0.5, prune_rate=0.5, prune_rate_floor=0.1)
    sparsity = DynamicSparsity(Stack(), cfg)
    assert [s for s in range(1, 21) if sparsity.is_update_step(s)] == [2, 4, 6, 8, 10]
    assert sparsity.prune_rate(0) == pytest.approx(0.5)
    assert sparsity.prune_rate(5) == pytest.approx(0.3)  # half-way through the cosine
    assert sparsity.prune_rate(10) == pytest.approx(0.1)
    assert sparsity.temperature(5) == 3.0  # constant unless final_temperature is set
    warming = DynamicSparsity(Stack(), _config(total_steps=10, temperature=1.0, final_temperature=5.0))
    assert [warming.temperature(s) for s in (0, 5, 10, 20)] == pytest.approx([1.0, 3.0, 5.0, 5.0])
    decaying = DynamicSparsity(
        Stack(), _config(total_steps=10, density=0.5, final_density=0.1, density_schedule="linear")
    )
    assert [decaying.target_density(s) for s in (0, 5, 10)] == pytest.approx([0.5, 0.3, 0.1])


def test_gradient_accumulation_counts_only_real_optimizer_steps():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = Stack()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, opt = accelerator.prepare(model, opt)
    sparsity = DynamicSparsity(model, _config(update_frequency=2, total_steps=8), opt)
    seen_updates = []
    for ids in _batches(12):
        with accelerator.accumulate(model):
            accelerator.backward(_loss(model, ids))
            if accelerator.sync_gradients:
                sparsity.before_optimizer_step()
                opt.step()
                sparsity.after_optimizer_step(opt.step_was_skipped)
                if sparsity.last_update.step == sparsity.step:
                    seen_updates.append(sparsity.step)
            opt.zero_grad()
    assert sparsity.step == 6
    assert seen_updates == [2, 4, 6]
    _check_zeros(accelerator.unwrap_model(model), sparsity)


def test_density_decay_reaches_final_density_with_exact_counts():
    model = Stack()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = _config(density=0.6, final_density=0.2, density_schedule="linear", update_frequency=2, total_steps=10)
    sparsity = DynamicSparsity(model, cfg, opt)
    densities = []
    for ids in _batches(10):
        _loss(model, ids).backward()
        sparsity.before_optimizer_step()
        opt.step()
        sparsity.after_optimizer_step()
        opt.zero_grad()
        _check_zeros(model, sparsity)
        for n, m in sparsity.masks.items():
            assert int(m.sum()) == sparsity.targets[n]
        densities.append(sparsity.density)
    assert densities == sorted(densities, reverse=True)
    assert sparsity.density == pytest.approx(0.2, abs=2e-3)


def _run(model, opt, sparsity, batches):
    for ids in batches:
        _loss(model, ids).backward()
        sparsity.before_optimizer_step()
        opt.step()
        sparsity.after_optimizer_step()
        opt.zero_grad()


def _fresh(cfg):
    torch.manual_seed(0)
    model = Stack()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt, DynamicSparsity(model, cfg, opt)


@pytest.mark.parametrize("prune", ["soft_magnitude", "magnitude"])
def test_save_load_continue_matches_straight_run(prune):
    cfg = _config(prune=prune, growth="random", update_frequency=2, total_steps=24)
    batches = _batches(12)

    model_a, opt_a, sp_a = _fresh(cfg)
    _run(model_a, opt_a, sp_a, batches)

    model_b, opt_b, sp_b = _fresh(cfg)
    _run(model_b, opt_b, sp_b, batches[:5])  # stop between two updates
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict(), "dst": sp_b.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    torch.manual_seed(1234)  # a resumed process starts with other RNG state
    model_c = Stack()
    opt_c = torch.optim.AdamW(model_c.parameters(), lr=1e-2)
    # construct first, then restore everything (the order of accelerator.load_state): construction
    # applies a fresh initial mask, which the restored weights and masks then replace
    sp_c = DynamicSparsity(model_c, cfg, opt_c)
    model_c.load_state_dict(saved["model"])
    opt_c.load_state_dict(saved["opt"])
    sp_c.load_state_dict(saved["dst"])
    assert sp_c.step == 5
    _run(model_c, opt_c, sp_c, batches[5:])

    assert sp_a.step == sp_c.step == 12
    for n in sp_a.masks:
        assert torch.equal(sp_a.masks[n], sp_c.masks[n]), n
        assert torch.equal(sp_a.ever_active[n], sp_c.ever_active[n]), n
    for (n, pa), (_, pc) in zip(model_a.named_parameters(), model_c.named_parameters(), strict=True):
        assert torch.equal(pa, pc), n
    # and the topology did change after the resume point, so the check has teeth
    assert sp_a.last_update.step == 12 and sp_a.last_update.grown > 0


def test_load_state_dict_rejects_other_model():
    _, _, sp = _fresh(_config())
    other = DynamicSparsity(Stack(depth=2), _config())
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict(sp.state_dict())


def test_stats_report_global_and_per_tensor_density():
    model, opt, sp = _fresh(_config(update_frequency=2, growth="random"))
    _run(model, opt, sp, _batches(2))
    stats = sp.stats()
    total = sum(m.numel() for m in sp.masks.values())
    active = sum(int(m.sum()) for m in sp.masks.values())
    assert stats["sparsity/density"] == pytest.approx(active / total)
    assert stats["sparsity/density"] == pytest.approx(0.4, abs=0.01)
    for n, m in sp.masks.items():
        assert stats[f"sparsity/density/{n}"] == pytest.approx(int(m.sum()) / m.numel())
    assert stats["sparsity/grown"] == sp.last_update.grown > 0
    assert stats["sparsity/mask_change"] == pytest.approx(sp.last_update.grown / active)
    assert stats["sparsity/itop_rate"] == pytest.approx(sum(int(m.sum()) for m in sp.ever_active.values()) / total)


def test_neurotrails_model_default_patterns():
    from helpers.configs import tiny_config

    from nt_llm.modeling import NeuroTrailsForCausalLM

    config = tiny_config(vocab_size=128)
    model = NeuroTrailsForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sparsity = DynamicSparsity(model, SparsityConfig(density=0.5, update_frequency=2, total_steps=6), opt)
    # 3 heads x (2 layers x 7 projections + lm_head)
    assert len(sparsity.names) == 3 * (2 * 7 + 1)
    assert all(n.startswith("heads.") and not n.endswith("norm.weight") for n in sparsity.names)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        ids = torch.randint(0, 128, (2, 8), generator=g)
        model(input_ids=ids, labels=ids).loss.backward()
        sparsity.before_optimizer_step()
        opt.step()
        sparsity.after_optimizer_step()
        opt.zero_grad()
        _check_zeros(model, sparsity)
        for n, m in sparsity.masks.items():
            assert int(m.sum()) == sparsity.targets[n]
    assert sparsity.last_update.step == 4 and sparsity.last_update.grown > 0
    # the masked weights are what the batched forward uses: perturbing a pruned position's value
    # does change the logits, and zeroing it back restores them exactly
    name = sparsity.names[-1]
    param = dict(model.named_parameters())[name]
    ids = torch.randint(0, 128, (1, 8), generator=g)
    with torch.no_grad():
        ref = model(input_ids=ids).logits.clone()
        pos = (~sparsity.masks[name]).nonzero()[0]
        param[tuple(pos)] = 5.0
        assert not torch.equal(model(input_ids=ids).logits, ref)
        param[tuple(pos)] = 0.0
        assert torch.equal(model(input_ids=ids).logits, ref)


def test_neurotrails_paper_recipe_also_sparsifies_backbone_and_embedding():
    from helpers.configs import tiny_config

    from nt_llm.modeling import NeuroTrailsForCausalLM
    from nt_llm.sparse import NEUROTRAILS_ALL

    config = tiny_config(ensemble_size=2, vocab_size=128)
    sparsity = DynamicSparsity(NeuroTrailsForCausalLM(config), SparsityConfig(density=0.5, include=NEUROTRAILS_ALL))
    assert "embed_tokens.weight" in sparsity.names
    assert sum(n.startswith("backbone.0.") for n in sparsity.names) == 7
    assert len(sparsity.names) == 1 + 7 + 2 * (2 * 7 + 1)
    assert not any("norm" in n for n in sparsity.names)


def test_after_without_before_is_an_error():
    model, opt, sparsity = _fresh(_config())
    _loss(model, _batches(1)[0]).backward()
    opt.step()
    with pytest.raises(RuntimeError, match="without before_optimizer_step"):
        sparsity.after_optimizer_step()
