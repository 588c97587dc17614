"""Specification of the C&W binary search (``attacks.search``) and C&W Perturb (``cw``) on a
tiny fixed PointNet (PROTOCOL.md sections 1 and 2, "cw")."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import ATTACKS
from attacks.base import draw_targets
from attacks.cw import CW, l2_distance
from attacks.losses import adversarial_loss
from attacks.search import binary_search_attack, update_bounds
from tiny_models import C, TinyPointNet, frozen, labelled_by, unit_clouds


class Recorder(nn.Module):
    """Wraps a model and records every input it sees with the predictions."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        self.seen.append((x.detach().clone(), logits.argmax(1).detach()))
        return logits


class Constant(nn.Module):
    """Predicts class ``cls`` for every input (with a gradient path through the points)."""

    def __init__(self, cls: int) -> None:
        super().__init__()
        self.cls = cls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], C, dtype=x.dtype) + 0.0 * x.sum()
        logits[:, self.cls] = 1.0
        return logits


@pytest.fixture(scope="module")
def model() -> TinyPointNet:
    return frozen(TinyPointNet())


@pytest.fixture(scope="module")
def data(model) -> tuple[torch.Tensor, torch.Tensor]:
    return labelled_by(model, unit_clouds(8, 64, seed=1))


#: a strong setting for the tiny model (small weight, large lr) so that some samples succeed.
FAST = {"init_weight": 0.1, "lr": 0.1, "num_iter": 20, "binary_steps": 3}


def _search(model, x, y, targets, **kw):
    params = {"init_weight": 10.0, "max_weight": 80.0, "binary_steps": 3, "num_iter": 10, "lr": 1e-2, "seed": 0, "stream": "test"}
    params.update(kw)
    return binary_search_attack(
        model, x, y, targets, indices=torch.arange(x.shape[0]), param=x, make_adv=lambda p, rows: p,
        distance=lambda adv, rows: l2_distance(adv, x[rows]),
        adv_loss=lambda z, rows: adversarial_loss(z, y[rows], targets[rows], "ce"), **params,
    )


def test_registered_with_paper_defaults():
    d = ATTACKS.get("cw").defaults
    assert (d["init_weight"], d["max_weight"], d["binary_steps"], d["num_iter"], d["lr"]) == (10.0, 80.0, 10, 50, 1e-2)
    assert (d["loss"], d["kappa"], d["targeted"], d["seed"]) == ("ce", 0.0, True, 0)
    assert ATTACKS.get("cw").description


def test_update_bounds_success_raises_lower_failure_lowers_upper():
    lower, upper, w = torch.zeros(2), torch.full((2,), 80.0), torch.full((2,), 10.0)
    lower, upper, w = update_bounds(lower, upper, w, torch.tensor([True, False]))
    assert lower.tolist() == [10.0, 0.0] and upper.tolist() == [80.0, 10.0] and w.tolist() == [45.0, 5.0]
    lower, upper, w = update_bounds(lower, upper, w, torch.tensor([False, True]))
    assert lower.tolist() == [10.0, 5.0] and upper.tolist() == [45.0, 10.0] and w.tolist() == [27.5, 7.5]


def test_search_moves_weight_in_the_right_direction(model, data):
    x, y = data
    targets = (y + 1) % C
    always = _search(Constant(1), x[:2], torch.zeros(2, dtype=torch.long), torch.tensor([1, 1]), binary_steps=2)
    assert always.step_success[0].all()  # first success always beats "inf"
    assert always.weights[:, 0].tolist() == [10.0, 45.0]
    never = _search(Constant(0), x[:2], torch.zeros(2, dtype=torch.long), torch.tensor([1, 1]), binary_steps=4)
    assert not never.step_success.any() and not never.success.any()
    assert never.weights[:, 0].tolist() == [10.0, 5.0, 2.5, 1.25]
    assert never.lower.tolist() == [0.0, 0.0] and never.upper.tolist() == [1.25, 1.25]
    # on a real model: every step follows the rule
    res = _search(model, x, y, targets, **{**FAST, "binary_steps": 4})
    assert res.step_success.any() and not res.step_success.all()
    for k in range(3):
        moved_up = res.weights[k + 1] > res.weights[k]
        assert torch.equal(moved_up, res.step_success[k])


def test_kept_iterate_is_the_closest_successful_one_and_failures_fall_back_to_the_last(model, data):
    x, y = data
    targets = draw_targets(y, C, seed=0)  # the targets CW draws: mixed success on this model
    rec = Recorder(model)
    res = _search(rec, x, y, targets, **FAST)
    assert len(rec.seen) == 3 * 20
    assert res.success.any() and not res.success.all()  # both branches are exercised
    for b in range(8):
        cands = [(float(l2_distance(a[b : b + 1], x[b : b + 1])), i, a[b]) for i, (a, p) in enumerate(rec.seen) if p[b] == targets[b]]
        if cands:
            d, i, a = min(cands, key=lambda c: (c[0], c[1]))
            assert bool(res.success[b])
            assert torch.equal(res.points[b], a)
            assert float(res.distance[b]) == pytest.approx(d, rel=1e-6)
            assert int(res.iterations[b]) == i
            with torch.no_grad():
                assert int(model(res.points[b : b + 1]).argmax(1)) == int(targets[b])
        else:
            assert not bool(res.success[b])
            assert torch.equal(res.points[b], rec.seen[-1][0][b])
            assert int(res.iterations[b]) == 60 and res.distance[b] == float("inf")


def test_never_successful_sample_falls_back_to_last_iterate():
    x = torch.randn(2, 16, 3, generator=torch.Generator().manual_seed(5))
    rec = Recorder(Constant(0))
    res = _search(rec, x, torch.zeros(2, dtype=torch.long), torch.tensor([2, 3]), binary_steps=2, num_iter=4)
    assert not res.success.any()
    assert torch.equal(res.points, rec.seen[-1][0])
    assert res.iterations.tolist() == [8, 8]


def test_targeted_success_means_prediction_equals_target_and_model_untouched(model, data):
    x, y = data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = CW(**FAST)(model, x, y)
    assert res.target is not None and not torch.any(res.target == y)
    assert torch.equal(res.success, res.pred == res.target)
    assert res.success.any()
    assert torch.all(res.iterations <= 60)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_untargeted_success_means_prediction_differs(model, data):
    x, y = data
    res = CW(**FAST, targeted=False, loss="margin")(model, x, y)
    assert torch.equal(res.success, res.pred != y) and res.success.any()


def test_cw_is_deterministic_given_the_seed(model, data):
    x, y = data
    a = CW(binary_steps=2, num_iter=5, seed=3)(model, x, y)
    b = CW(binary_steps=2, num_iter=5, seed=3)(model, x, y)
    c = CW(binary_steps=2, num_iter=5, seed=4)(model, x, y, targets=a.target)
    assert torch.equal(a.points, b.points) and torch.equal(a.target, b.target)
    assert not torch.equal(a.points, c.points)  # the start noise depends on the seed


@pytest.mark.parametrize(
    "kwargs", [{"loss": "hinge"}, {"binary_steps": 0}, {"num_iter": 0}, {"lr": 0.0}, {"init_weight": 0.0}, {"max_weight": 5.0}]
)
def test_invalid_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError):
        CW(**kwargs)
