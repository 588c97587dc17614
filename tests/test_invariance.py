"""The reproducibility guarantee (``attacks.invariance``): per-sample results do not depend on
the batch a sample is in, its order, or the thread count, up to floating-point rounding.

Every registered attack is checked in float64 (rounding ~1e-16): the first sample alone, the
other samples and the reversed batch, run under another thread count, must give the whole
batch's per-sample results to 1e-9 with identical discrete outcomes (success, prediction,
first-success iteration). Planted coupling bugs (batch-wide noise, targets or gradient
normalisation) must fail the same check, so it cannot pass for reduction order alone and
fail only for a real bug. ``.ci/run`` runs this file under OMP_NUM_THREADS 1 and 2 and two
ATen CPU capabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

import attacks  # noqa: F401 - registers the attacks
from attacks.base import draw_targets
from attacks.factory import build_attack
from attacks.invariance import batch_invariance_report, compare_results
from attacks.pgd import PGD
from benchmark.core.registry import ATTACKS
from tiny_models import TinyPointNet, frozen, unit_clouds

pytestmark = pytest.mark.invariance

#: per attack: a setting in which the tiny model is fooled on some samples but not all, at
#: different iterations (so the discrete outcomes are exercised), and the cloud size.
SETTINGS: dict[str, tuple[dict, int]] = {
    "pgd": ({"budget": 2.0, "steps": 6}, 64),
    "fgm": ({"budget": 2.0}, 64),
    "ifgm": ({"budget": 2.0, "steps": 6}, 64),
    "cw": ({"init_weight": 0.1, "lr": 0.1, "num_iter": 12, "binary_steps": 2}, 64),
    "knn": ({"num_iter": 20, "lr": 0.1, "clip": 1.0, "chamfer_weight": 0.01, "smooth_weight": 0.01}, 64),
    "add-cd": ({"num_add": 8, "init_weight": 0.1, "max_weight": 10.0, "lr": 0.1, "num_iter": 10, "binary_steps": 2}, 64),
    "add-hd": ({"num_add": 16, "init_weight": 0.01, "max_weight": 1.0, "lr": 0.2, "num_iter": 15, "binary_steps": 2}, 64),
    "drop-100": ({"num_drop": 20}, 64),
    "drop-200": ({"num_drop": 30, "per_round": 10}, 64),
    "advpc": ({"num_iter": 10, "restarts": 2, "lr": 0.1, "clip": 1.0}, 32),  # smooth model, linear "AE"
    "aof": ({"num_low": 10, "k": 8, "num_iter": 10, "restarts": 2, "lr": 0.1, "clip": 0.5, "kappa": 0.0}, 64),
    "apgd": ({"budget": 1.0, "budget_scale": "absolute", "steps": 12, "restarts": 2, "loss": "dlr"}, 64),
    "fmn": ({"steps": 15}, 64),
}


def _autoencoder() -> torch.nn.Module:
    """A stand-in for AdvPC's autoencoder that depends on its input point by point (a trained
    autoencoder's output barely moves on these random clouds, so no sample would succeed)."""
    torch.manual_seed(0)
    ae = torch.nn.Linear(3, 3)
    with torch.no_grad():
        ae.weight.copy_(-torch.eye(3) + 0.3 * torch.randn(3, 3))
        ae.bias.zero_()
    return frozen(ae)


def _other_threads() -> int:
    return 1 if torch.get_num_threads() > 1 else 2


def _batch(n: int, b: int = 6, smooth: bool = False) -> tuple[torch.nn.Module, Tensor, Tensor]:
    model = frozen(TinyPointNet(smooth=smooth))
    x = unit_clouds(b, n, seed=1)
    with torch.no_grad():
        return model, x, model(x).argmax(1)


#: other modes of the same attacks (untargeted, the MRPD code's target-saliency drop)
VARIANTS: list[tuple[str, dict, int]] = [
    ("pgd", {"budget": 2.0, "steps": 6, "targeted": False}, 64),
    ("cw", {"init_weight": 0.1, "lr": 0.1, "num_iter": 12, "binary_steps": 2, "targeted": False}, 64),
    ("drop-100", {"num_drop": 20, "saliency_label": "target", "seed": 2}, 64),
    ("apgd", {"budget": 0.8, "norm": "point", "budget_scale": "absolute", "steps": 12, "targeted": True}, 64),
    ("apgd", {"budget": 0.5, "norm": "linf", "budget_scale": "absolute", "steps": 12, "loss": "ce"}, 64),
    ("fmn", {"steps": 15, "targeted": True}, 64),
    # early_stop: fooled samples leave the batch (the reduced presets' search schedule)
    *[(name, {**SETTINGS[name][0], "early_stop": True}, SETTINGS[name][1])
      for name in ("cw", "add-cd", "knn", "advpc", "aof", "apgd")],
]
CASES = [(name, *SETTINGS[name]) for name in sorted(SETTINGS)] + VARIANTS


def test_every_registered_attack_has_a_setting_here():
    assert sorted(SETTINGS) == sorted(ATTACKS.names())


@pytest.mark.parametrize("name, params, n", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_per_sample_results_do_not_depend_on_batch_order_or_threads(name, params, n):
    model, x, y = _batch(n, smooth=name == "advpc")
    attack = build_attack(name, params, seed=0, resolve_model=lambda _: _autoencoder())
    report = batch_invariance_report(attack, model, x, y, other_threads=_other_threads())
    assert report.differences == []
    # a non-trivial run: not every sample ends the same way
    if name not in ("drop-100", "drop-200", "fgm"):  # fmn: the minimal distances differ too
        outcomes = set(zip(report.full.success.tolist(), report.full.iterations.tolist(),
                           report.full.l2.tolist() if name == "fmn" else [0] * len(x)))
        assert len(outcomes) >= 2, outcomes


# ------------------------------------------------------------------ planted coupling bugs


@dataclass
class _BatchNoisePGD(PGD):
    """Bug: the random start is one draw for the whole batch (sample b's noise depends on B)."""

    def attack(self, model, points, labels, targets, *, indices):
        g = torch.Generator().manual_seed(self.seed)
        noise = (torch.rand(points.shape, generator=g, dtype=torch.float64) - 0.5).to(points)
        return super().attack(model, points + 0.2 * noise, labels, targets, indices=indices)


@dataclass
class _BatchTargetsPGD(PGD):
    """Bug: targets drawn for batch positions 0..B-1 instead of the samples' test-set indices."""

    def _resolve_targets(self, targets, labels, num_classes, indices, batch):
        return draw_targets(labels, num_classes, self.seed, torch.arange(batch))


@dataclass
class _BatchNormalisedPGD(PGD):
    """Bug: the step direction is normalised by the whole batch's gradient norm."""

    def _direction(self, grad: Tensor) -> Tensor:
        return grad / grad.norm().clamp_min(1e-12) * (grad.shape[0] ** 0.5)


@pytest.mark.parametrize("buggy", [_BatchNoisePGD, _BatchTargetsPGD, _BatchNormalisedPGD])
def test_a_planted_coupling_bug_fails_the_check(buggy):
    model, x, y = _batch(64)
    report = batch_invariance_report(buggy(budget=2.0, steps=6), model, x, y)
    assert report.differences, f"{buggy.__doc__} went unnoticed"
    correct = batch_invariance_report(PGD(budget=2.0, steps=6), model, x, y)
    assert correct.differences == []


def test_compare_results_reports_each_kind_of_difference():
    model, x, y = _batch(64, b=3)
    a = PGD(budget=2.0, steps=3)(model, x, y)
    b = PGD(budget=2.0, steps=3)(model, x, y)
    assert compare_results(a, b) == []
    b.points = b.points.clone()
    b.points[1, 0, 0] += 1e-6
    b.iterations = b.iterations.clone()
    b.iterations[2] += 1
    lines = sorted(compare_results(a, b))
    assert len(lines) == 2 and lines[0].startswith("iterations: samples [2]") and lines[1].startswith("points: samples [1]")
    assert compare_results(a, b, atol=1e-5, fields=["points"]) == []
