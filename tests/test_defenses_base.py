"""The defense interface and the simple preprocessing defenses (none, srs, sor)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from benchmark.core.data import load_dataset
from benchmark.core.training import evaluate_accuracy
from defenses import DEFENSES, DefenseContext, DefendedModel, PreprocessDefense, build_defense, register_defense
from defenses.base import ExpectationOverTransformation, as_defended, check_points, inference_cost, straight_through
from defenses.sor import resample_kept, sor_mask
from defenses.srs import random_subset
from tiny_models import TinyPointNet, frozen, unit_clouds


def sphere(n: int = 512, seed: int = 0) -> torch.Tensor:
    x = torch.randn(1, n, 3, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=-1, keepdim=True)


def ctx_for(victim: nn.Module, train=None, **kw) -> DefenseContext:
    return DefenseContext(victim=victim, train=train, **kw)


# --------------------------------------------------------------------------- sor


def test_sor_removes_planted_outliers_and_keeps_a_clean_sphere():
    clean = sphere(1024)
    assert bool(sor_mask(clean, k=2, alpha=1.1).float().mean() > 0.8)  # k=2 trims ~10% of a random sample
    far = torch.tensor([[[3.0, 0, 0], [0, -3.0, 0], [2.0, 2.0, 2.0]]])
    cloud = torch.cat([clean, far], dim=1)
    for k, alpha, squared in ((2, 1.1, True), (16, 1.0, False)):
        mask = sor_mask(cloud, k=k, alpha=alpha, squared=squared)
        assert not bool(mask[0, -3:].any()), "planted outliers survive"
    kept = resample_kept(cloud, sor_mask(cloud), 1027)
    assert kept.shape == (1, 1027, 3)
    assert float(kept.norm(dim=-1).max()) <= 1.0 + 1e-5


def test_sor_handles_different_survivor_counts_per_cloud_without_mixing_samples():
    a = sphere(256, seed=1)
    b = sphere(256, seed=2).clone()
    b[0, :3] = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, -3.0]])  # outliers in the second cloud only
    batch = torch.cat([a, b])
    mask = sor_mask(batch)
    assert not bool(mask[1, :3].any()) and int(mask[1].sum()) != int(mask[0].sum())
    out = build_defense("sor").preprocess(batch, torch.Generator())
    assert out.shape == batch.shape
    # each output cloud holds only its own kept points
    assert float(out[1].norm(dim=-1).max()) <= 1.0 + 1e-5
    single = build_defense("sor").preprocess(b, torch.Generator())
    assert torch.equal(single[0], out[1])


def test_resample_kept_cycles_and_truncates():
    pts = torch.arange(15.0).view(1, 5, 3)
    mask = torch.tensor([[False, True, False, True, False]])
    out = resample_kept(pts, mask, 5)
    assert torch.equal(out[0, :, 0], torch.tensor([3.0, 9.0, 3.0, 9.0, 3.0]))
    assert torch.equal(resample_kept(pts, mask, 1)[0, :, 0], torch.tensor([3.0]))
    with pytest.raises(ValueError, match="no kept point"):
        resample_kept(pts, torch.zeros(1, 5, dtype=torch.bool), 3)


def test_sor_presets_registered():
    assert build_defense("sor").k == 2 and build_defense("sor").alpha == 1.1
    mrpd = build_defense("sor-mrpd")
    assert (mrpd.k, mrpd.alpha, mrpd.squared) == (16, 1.0, False)
    with pytest.raises(ValueError, match="k must be"):
        sor_mask(sphere(8), k=8)


# --------------------------------------------------------------------------- srs


def test_srs_output_size_and_seeding():
    x = unit_clouds(3, 1024)
    srs = build_defense("srs")
    out = srs.preprocess(x, torch.Generator().manual_seed(0))
    assert out.shape == (3, 524, 3)
    again = srs.preprocess(x, torch.Generator().manual_seed(0))
    other = srs.preprocess(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)
    # distinct points of the input, in input order
    for b in range(3):
        rows = (out[b, :, None, :] == x[b, None, :, :]).all(-1).float().argmax(-1)
        assert bool((rows.diff() > 0).all())
    with pytest.raises(ValueError, match="num_drop"):
        srs.preprocess(unit_clouds(1, 256), torch.Generator())
    assert random_subset(x, 1, torch.Generator()).shape == (3, 1, 3)


def test_srs_defended_model_reseeds_and_is_randomised():
    victim = frozen(TinyPointNet())
    model = build_defense("srs", num_drop=32)(ctx_for(victim))
    assert model.randomized and model.kind == "preprocess" and model.gradient == "bpda"
    x = unit_clouds(4, 64)
    model.reseed(5)
    first = model(x)
    model.reseed(5)
    assert torch.equal(first, model(x))


# --------------------------------------------------------------------------- BPDA / EOT


def test_straight_through_forward_equals_defense_backward_identity():
    x = unit_clouds(2, 32).requires_grad_()
    defended = x.detach() * 0.5 + 1.0
    out = straight_through(x, defended, aligned=True)
    assert torch.equal(out, defended)
    g = torch.randn_like(out)
    out.backward(g)
    assert torch.equal(x.grad, g)


def test_straight_through_of_reordered_points_routes_gradients_by_nearest_point():
    # SOR keeps the same N but moves the kept points to the front: gradients follow the points
    x = unit_clouds(1, 16).requires_grad_()
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    out = straight_through(x, x.detach()[:, order] + 1e-5)
    g = torch.randn_like(out)
    out.backward(g)
    expected = torch.zeros_like(x)
    expected[0, order] = g[0]
    assert torch.equal(x.grad, expected)
    with pytest.raises(ValueError, match="aligned=True"):
        straight_through(x, x.detach()[:, :8], aligned=True)


def test_straight_through_with_fewer_points_routes_gradients_to_the_kept_points():
    x = unit_clouds(1, 16).requires_grad_()
    kept = x.detach()[:, [3, 7, 7]] + 1e-4
    out = straight_through(x, kept)
    out.backward(torch.ones_like(out))
    expected = torch.zeros_like(x)
    expected[0, 3] = 1.0
    expected[0, 7] = 2.0
    assert torch.equal(x.grad, expected)


def test_bpda_view_gives_identity_gradients_through_sor():
    victim = frozen(TinyPointNet(smooth=True))
    model = build_defense("sor")(ctx_for(victim))
    x = unit_clouds(2, 64).requires_grad_()
    model.attackable()(x).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    # same forward values as the defended model
    with torch.no_grad():
        assert torch.allclose(model.attackable()(x), model(x))


def test_eot_averages_draws():
    victim = frozen(TinyPointNet(smooth=True))
    model = build_defense("srs", num_drop=32)(ctx_for(victim))
    eot = model.attackable(eot=4)
    assert isinstance(eot, ExpectationOverTransformation)
    x = unit_clouds(2, 64)
    model.reseed(0)
    draws = torch.stack([model(x) for _ in range(4)]).mean(0)
    model.reseed(0)
    with torch.no_grad():
        assert torch.allclose(eot(x), draws, atol=1e-6)
    with pytest.raises(ValueError, match="at least one draw"):
        ExpectationOverTransformation(model, 0)


# --------------------------------------------------------------------------- interface


def test_check_points_messages():
    for bad, msg in ((torch.zeros(2, 3), r"\[B, N, 3\]"), (torch.zeros(0, 4, 3), "empty"),
                     (torch.full((1, 4, 3), float("nan")), "NaN"), (torch.zeros(1, 4, 3, dtype=torch.long), "float")):
        with pytest.raises(ValueError, match=msg):
            check_points(bad)


def test_plain_module_from_prepare_is_wrapped_with_declarations():
    class Identity(PreprocessDefense):
        pass

    wrapped = as_defended(nn.Linear(3, 2))
    assert isinstance(wrapped, DefendedModel) and wrapped.kind == "model" and wrapped.gradient == "exact"
    with pytest.raises(TypeError, match="nn.Module"):
        as_defended("not a module")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        DefendedModel(nn.Identity(), kind="magic")


def test_a_plugin_defense_registers_lists_and_runs():
    @register_defense("test-jitter")
    @dataclass
    class Jitter(PreprocessDefense):
        """Gaussian jitter (test plug-in)."""

        sigma: float = 0.01
        randomized = True

        def preprocess(self, points, generator):
            return points + self.sigma * torch.randn(points.shape, generator=generator).to(points)

    try:
        assert "test-jitter" in DEFENSES.names()
        model = build_defense("test-jitter", sigma=0.0)(ctx_for(frozen(TinyPointNet())))
        assert model.defense_name == "test-jitter" and model.randomized
        x = unit_clouds(2, 64)
        assert torch.allclose(model(x), TinyPointNet()(x))
    finally:
        DEFENSES.remove("test-jitter")


class FakeClock:
    """Stands in for ``time`` in ``defenses.cost``: time passes only when a model below runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class TimedVictim(nn.Module):
    """The tiny PointNet; each call takes the next of ``costs`` fake seconds (then ``default``)."""

    def __init__(self, clock: FakeClock, costs: list[float], default: float = 1.0) -> None:
        super().__init__()
        self.net, self.clock, self.costs, self.default = frozen(TinyPointNet()), clock, list(costs), default
        self.inputs: list[torch.Tensor] = []
        self.grad: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x)
        self.grad.append(torch.is_grad_enabled())
        self.clock.now += self.costs.pop(0) if self.costs else self.default
        return self.net(x)


class ThreeVotes(nn.Module):
    """A defense that runs the victim three times and spends 0.5 fake seconds of its own."""

    def __init__(self, victim: TimedVictim) -> None:
        super().__init__()
        self.victim, self.calls = victim, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.victim.clock.now += 0.5
        return sum(self.victim(x) for _ in range(3)) / 3


def test_inference_cost_reports_ratio(monkeypatch):
    import defenses.cost

    clock = FakeClock()
    monkeypatch.setattr(defenses.cost, "time", clock)
    # victim calls in order: warmup bare (0.1 s), warmup defended (3 x 0 s), then 3 repeats of
    # bare, defended (3 calls): bare 5, 1, 2 s; defended 0.5 + 3 x (1, 3, 1) s
    victim = TimedVictim(clock, [0.1, 0, 0, 0, 5.0, 1, 1, 1, 1.0, 3, 3, 3, 2.0, 1, 1, 1]).eval()
    votes = ThreeVotes(victim)
    defended = DefendedModel(votes, name="three-votes").eval()
    points = unit_clouds(4, 64)
    cost = inference_cost(defended, victim, points, repeats=3, warmup=1)
    # best of the timed repeats (warmup excluded): bare min(5, 1, 2), defended min(3.5, 9.5, 3.5)
    assert set(cost) == {"victim_seconds", "defended_seconds", "ratio"}
    assert cost["victim_seconds"] == pytest.approx(1.0)
    assert cost["defended_seconds"] == pytest.approx(3.5)
    assert cost["ratio"] == pytest.approx(cost["defended_seconds"] / cost["victim_seconds"]) == pytest.approx(3.5)
    # each model ran warmup + repeats times, on the given points, without autograd; modes untouched
    assert votes.calls == 1 + 3 and len(victim.inputs) == (1 + 3) * (1 + 3)
    assert all(x is points for x in victim.inputs) and not any(victim.grad)
    assert not defended.training and not victim.training

    victim = TimedVictim(clock, [])  # every call 1 s
    votes = ThreeVotes(victim)
    cost = inference_cost(DefendedModel(votes), victim, points, repeats=5, warmup=0)
    assert votes.calls == 5 and len(victim.inputs) == 5 * 4  # repeats honoured, no warmup
    assert (cost["victim_seconds"], cost["defended_seconds"]) == pytest.approx((1.0, 3.5))
    assert cost["ratio"] == pytest.approx(3.5)

    # a victim that takes no time at all: no ratio (nan), not a division error
    victim = TimedVictim(clock, [], default=0.0)
    cost = inference_cost(DefendedModel(ThreeVotes(victim)), victim, points, repeats=2)
    assert cost["victim_seconds"] == 0.0 and cost["defended_seconds"] == pytest.approx(0.5)
    assert math.isnan(cost["ratio"])


def test_cached_training_stores_and_reloads(tmp_path):
    data = load_dataset("synthshapes", "train", num_points=64, options={"train_size": 33, "classes": ["chair", "cup", "lamp"]})
    module = nn.Linear(3, 2)
    calls = []

    def train():
        calls.append(1)
        with torch.no_grad():
            module.weight.fill_(0.5)
        return {"score": 1.0}

    ctx = ctx_for(nn.Identity(), data, cache_dir=tmp_path, log=lambda m: None)
    meta, cached = ctx.cached_training("demo", module, {"a": 1}, train)
    assert not cached and meta["score"] == 1.0
    fresh = nn.Linear(3, 2)
    meta2, cached2 = ctx.cached_training("demo", fresh, {"a": 1}, train)
    assert cached2 and len(calls) == 1 and torch.equal(fresh.weight, module.weight)
    # corrupt entry -> warning and retraining
    entry = next((tmp_path / "defenses").glob("demo-*.safetensors"))
    entry.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="retraining"):
        ctx.cached_training("demo", nn.Linear(3, 2), {"a": 1}, train)
    assert len(calls) == 2


def test_a_part_trained_without_the_victim_is_reused_across_victims(tmp_path):
    data = load_dataset("synthshapes", "train", num_points=64, options={"train_size": 33, "classes": ["chair", "cup", "lamp"]})
    calls = []

    def train():
        calls.append(1)
        return {"score": 1.0}

    for victim_hash in ("victim-a", "victim-b"):
        ctx = ctx_for(nn.Identity(), data, cache_dir=tmp_path, log=lambda m: None, victim_hash=victim_hash)
        ctx.cached_training("part", nn.Linear(3, 2), {"a": 1}, train, uses_victim=False)
    assert len(calls) == 1  # the second victim loads the first one's entry
    ctx = ctx_for(nn.Identity(), data, cache_dir=tmp_path, log=lambda m: None, victim_hash="victim-c")
    assert not ctx.cached_training("part", nn.Linear(3, 2), {"a": 1}, train)[1]  # by default the victim counts
    assert len(calls) == 2


# --------------------------------------------------------------------------- accuracy on trained victim


@pytest.fixture(scope="module")
def trained_victim():
    classes = ["chair", "cup", "lamp", "airplane"]
    opts = {"train_size": 160, "test_size": 64, "classes": classes}
    train = load_dataset("synthshapes", "train", num_points=1024, options=opts)
    test = load_dataset("synthshapes", "test", num_points=1024, options=opts)
    torch.manual_seed(0)
    model = TinyPointNet(num_classes=len(classes))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = train.tensors()
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return frozen(model), train, test


@pytest.mark.parametrize("name,params", [("none", {}), ("sor", {}), ("sor-mrpd", {}), ("srs", {})])
def test_defenses_keep_clean_accuracy(trained_victim, name, params):
    victim, train, test = trained_victim
    base = evaluate_accuracy(victim, test)
    assert base > 0.8
    model = build_defense(name, **params)(ctx_for(victim, train))
    acc = evaluate_accuracy(model, test)
    assert acc >= base - 0.08, f"{name}: {acc:.3f} vs bare {base:.3f}"


def test_bpda_views_are_reentrant_beside_plain_forwards():
    """A BPDA view switches nothing on the shared defense: a plain forward running at the same
    time (another thread, here held inside the preprocessing together with the view's) still
    differentiates through the preprocessing."""
    import threading

    from defenses.base import PreprocessedModel

    inside = threading.Barrier(2, timeout=10)

    def double(points, generator):
        inside.wait()  # both forwards are inside the preprocessing at once
        return points * 2

    defended = PreprocessedModel(nn.Identity(), double, gradient="bpda", aligned=True)
    view = defended.attackable()
    grads = {}

    def gradient(name, model):
        x = torch.ones(1, 4, 3, requires_grad=True)
        model(x).sum().backward()
        grads[name] = x.grad

    threads = [threading.Thread(target=gradient, args=("bpda", view)),
               threading.Thread(target=gradient, args=("plain", defended))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(grads["plain"], torch.full((1, 4, 3), 2.0))  # through the preprocessing
    assert torch.equal(grads["bpda"], torch.ones(1, 4, 3))  # straight through
