"""Specification of PGD / FGM / I-FGM on a tiny fixed PointNet (PROTOCOL.md section 2, "pgd")."""
from __future__ import annotations

import math

import pytest
import torch

from attacks import ATTACKS
from attacks.pgd import FGM, IFGM, PGD
from tiny_models import TinyPointNet


@pytest.fixture(scope="module")
def model() -> TinyPointNet:
    return TinyPointNet()


@pytest.fixture(scope="module")
def data(model) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 64, 3, generator=g)
    x = x / x.norm(dim=-1).amax(dim=1)[:, None, None]
    with torch.no_grad():
        labels = model(x).argmax(1)  # clean predictions: every sample starts correct
    return x, labels


def test_registered_with_paper_defaults_and_descriptions():
    d = ATTACKS.get("pgd").defaults
    assert (d["budget"], d["steps"], d["loss"], d["targeted"], d["norm"], d["random_start"]) == (
        0.08, 20, "ce", True, "l2", True
    )
    assert ATTACKS.get("fgm").defaults["steps"] == 1 and not ATTACKS.get("fgm").defaults["random_start"]
    assert not ATTACKS.get("ifgm").defaults["random_start"]
    assert all(ATTACKS.get(n).description for n in ("pgd", "fgm", "ifgm"))


@pytest.mark.parametrize("budget", [0.08, 0.5])
def test_l2_budget_is_respected_for_every_sample(model, data, budget):
    x, y = data
    res = PGD(budget=budget, steps=5)(model, x, y)
    assert torch.all((res.points - x).flatten(1).norm(dim=1) <= budget + 1e-6)
    assert torch.all(res.l2 <= budget + 1e-6)


def test_linf_budget_is_respected_for_every_coordinate(model, data):
    x, y = data
    res = PGD(budget=0.02, steps=5, norm="linf")(model, x, y)
    assert torch.all((res.points - x).abs() <= 0.02 + 1e-6)


def test_untargeted_pgd_with_generous_budget_fools_most_samples(model, data):
    x, y = data
    res = PGD(budget=2.0, steps=20, targeted=False, loss="margin")(model, x, y)
    assert res.success.float().mean() >= 0.75
    assert torch.equal(res.success, res.pred != y)


def test_targeted_success_means_prediction_equals_target(model, data):
    x, y = data
    res = PGD(budget=2.0, steps=20)(model, x, y)
    assert res.target is not None and not torch.any(res.target == y)
    assert torch.equal(res.success, res.pred == res.target)
    assert res.success.any()


def test_iterations_count_first_success_and_cap_at_steps(model, data):
    x, y = data
    res = PGD(budget=2.0, steps=10, targeted=False)(model, x, y)
    assert torch.all((res.iterations >= 1) & (res.iterations <= 10))  # clean samples start correct


def test_pgd_is_deterministic_given_the_seed(model, data):
    x, y = data
    a = PGD(budget=0.3, steps=5, seed=3)(model, x, y)
    b = PGD(budget=0.3, steps=5, seed=3)(model, x, y)
    c = PGD(budget=0.3, steps=5, seed=4)(model, x, y)
    assert torch.equal(a.points, b.points) and torch.equal(a.target, b.target)
    assert not torch.equal(a.points, c.points)


def test_fgm_is_one_step_of_size_eps_along_the_normalised_gradient(model, data):
    x, y = data
    res = FGM(budget=0.1, targeted=False)(model, x, y)
    torch.testing.assert_close(res.l2, torch.full((8,), 0.1), atol=1e-6, rtol=0)
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xg), y, reduction="sum").backward()
    g = xg.grad / xg.grad.flatten(1).norm(dim=1)[:, None, None]
    torch.testing.assert_close(res.points, x + 0.1 * g, atol=1e-6, rtol=0)  # ascend CE = descend -CE
    with pytest.raises(ValueError, match="one step"):
        FGM(steps=3)


def test_ifgm_starts_from_the_clean_cloud(model, data):
    x, y = data
    a = IFGM(budget=0.3, steps=3, seed=0)(model, x, y)
    b = IFGM(budget=0.3, steps=3, seed=9)(model, x, y, targets=a.target)
    assert torch.equal(a.points, b.points)  # no randomness besides the targets


def test_sqrt3k_budget_scale_multiplies_eps_by_sqrt_3n(model, data):
    x, y = data
    attack = PGD(budget=0.01, steps=3, budget_scale="sqrt3k", random_start=False)
    assert attack.epsilon(64) == pytest.approx(0.01 * math.sqrt(3 * 64))
    res = attack(model, x, y)
    assert torch.all(res.l2 <= 0.01 * math.sqrt(192) + 1e-6)
    assert torch.any(res.l2 > 0.01 * 2)  # actually uses more than the absolute budget


@pytest.mark.parametrize(
    "kwargs", [{"norm": "l1"}, {"loss": "hinge"}, {"steps": 0}, {"budget": 0.0}, {"norm": "linf", "budget_scale": "sqrt3k"}]
)
def test_invalid_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError):
        PGD(**kwargs)
