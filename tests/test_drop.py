"""Specification of the saliency-map point drop (PROTOCOL.md section 2, "drop-100, drop-200")."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks import ATTACKS
from attacks.base import draw_targets
from attacks.drop import SaliencyDrop, SaliencyDrop100, saliency_scores
from tiny_models import C, TinyPointNet

N = 64


class MeanLinear(nn.Module):
    """``z = mean_i(x_i) @ A``: the CE gradient w.r.t. point i is ``A (softmax - onehot) / M``."""

    def __init__(self) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.randn(3, C, generator=torch.Generator().manual_seed(5)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1) @ self.A


@pytest.fixture(scope="module")
def model() -> TinyPointNet:
    return TinyPointNet()


@pytest.fixture(scope="module")
def data(model) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, N, 3, generator=g)
    x = x / x.norm(dim=-1).amax(dim=1)[:, None, None]
    with torch.no_grad():
        labels = model(x).argmax(1)  # clean predictions: every sample starts correct
    return x, labels


def _is_subset(adv: torch.Tensor, clean: torch.Tensor) -> bool:
    """Every adversarial point equals (exactly) a point of its clean cloud, without repeats."""
    for a, c in zip(adv, clean):
        match = (a[:, None, :] == c[None, :, :]).all(dim=-1)  # [M, N]
        if not bool(match.any(dim=1).all()):
            return False
        if match.float().argmax(dim=1).unique().numel() != a.shape[0]:
            return False
    return True


def test_registered_sizes_defaults_and_descriptions():
    a200, a100 = ATTACKS.build("drop-200"), ATTACKS.build("drop-100")
    assert isinstance(a200, SaliencyDrop) and isinstance(a100, SaliencyDrop100)
    assert (a200.num_drop, a100.num_drop) == (200, 100)
    for a in (a200, a100):
        assert (a.per_round, a.alpha, a.saliency_label, a.targeted) == (5, 1.0, "label", False)
    assert (a200.rounds, a100.rounds) == (40, 20)
    assert "200" in ATTACKS.get("drop-200").description and "100" in ATTACKS.get("drop-100").description
    assert ATTACKS.build("drop-100", num_drop=7).num_drop == 7


def test_registered_attacks_drop_100_and_200_points(model):
    x = torch.randn(2, 256, 3, generator=torch.Generator().manual_seed(2)) * 0.5
    y = torch.tensor([0, 1])
    r100 = ATTACKS.build("drop-100", per_round=20)(model, x, y)
    r200 = ATTACKS.build("drop-200", per_round=40)(model, x, y)
    assert r100.points.shape == (2, 156, 3) and r200.points.shape == (2, 56, 3)
    assert torch.equal(r100.iterations, torch.full((2,), 5)) and torch.equal(r200.iterations, torch.full((2,), 5))


@pytest.mark.parametrize(("num_drop", "per_round", "rounds"), [(20, 5, 4), (17, 5, 4), (3, 5, 1), (10, 1, 10)])
def test_output_is_a_subset_of_size_n_minus_num_drop(model, data, num_drop, per_round, rounds):
    x, y = data
    res = SaliencyDrop(num_drop=num_drop, per_round=per_round)(model, x, y)
    assert res.points.shape == (8, N - num_drop, 3)
    assert _is_subset(res.points, x)
    assert torch.equal(res.iterations, torch.full((8,), rounds))
    assert torch.all(res.chamfer == 0) and torch.all(res.l2.isnan())
    assert res.target is None and torch.equal(res.success, res.pred != y)


def test_scores_match_a_brute_force_per_point_computation():
    torch.manual_seed(0)
    lin = MeanLinear()
    x = torch.randn(3, 11, 3, dtype=torch.float64)  # odd M
    x2 = torch.randn(3, 10, 3, dtype=torch.float64)  # even M: the lower middle value (torch.median)
    y = torch.tensor([0, 2, 4])
    for pts in (x, x2):
        for alpha in (1.0, 0.5, 2.0):
            A = lin.A.detach().double()
            p = torch.softmax(pts.mean(1) @ A, dim=1) - F.one_hot(y, C).double()
            expected = np.zeros(pts.shape[:2])
            for b in range(pts.shape[0]):
                c = np.sort(pts[b].numpy(), axis=0)[(pts.shape[1] - 1) // 2]
                g_b = (A @ p[b]).numpy() / pts.shape[1]  # the same gradient for every point
                for i in range(pts.shape[1]):
                    d = pts[b, i].numpy() - c
                    expected[b, i] = -np.linalg.norm(d) ** alpha * float(d @ g_b)
            xg = pts.clone().requires_grad_(True)
            F.cross_entropy(xg.mean(1) @ A, y, reduction="sum").backward()
            got = saliency_scores(pts, xg.grad, alpha)
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_one_round_drops_the_highest_scoring_points():
    lin = MeanLinear()
    x = torch.randn(4, 12, 3, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3])
    xg = x.clone().requires_grad_(True)
    F.cross_entropy(lin(xg), y, reduction="sum").backward()
    scores = saliency_scores(x, xg.grad)
    for per_round in (1, 3):
        res = SaliencyDrop(num_drop=per_round, per_round=per_round)(lin, x, y)
        dropped = scores.topk(per_round, dim=1).indices
        keep = torch.ones(4, 12, dtype=torch.bool)
        keep[torch.arange(4)[:, None], dropped] = False
        assert torch.equal(res.points, x[keep].view(4, 12 - per_round, 3))  # order preserved


def test_saliency_drop_raises_the_loss_more_than_random_dropping(model, data):
    x, y = data
    num_drop = 24
    res = SaliencyDrop(num_drop=num_drop, per_round=2)(model, x, y)
    g = torch.Generator().manual_seed(0)
    keep = torch.stack([torch.randperm(N, generator=g)[: N - num_drop].sort().values for _ in range(8)])
    rand = x.gather(1, keep[..., None].expand(-1, -1, 3))
    with torch.no_grad():
        clean_loss = F.cross_entropy(model(x), y, reduction="none")
        adv_loss = F.cross_entropy(model(res.points), y, reduction="none")
        rand_loss = F.cross_entropy(model(rand), y, reduction="none")
    assert adv_loss.mean() > rand_loss.mean() and adv_loss.mean() > clean_loss.mean()
    assert (adv_loss > rand_loss).float().mean() >= 0.75


class SpikeDetector(nn.Module):
    """Class 0 iff the highest point lies above z = 0.3: ``z = [max_i z_i, 0.3]``."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = x[..., 2].amax(dim=1)
        return self.scale * torch.stack([top, torch.full_like(top, 0.3)], dim=1)


def test_saliency_drop_fools_a_spike_detector_where_random_dropping_does_not():
    g = torch.Generator().manual_seed(4)
    body = (torch.rand(8, N - 4, 3, generator=g) - 0.5) * 0.4  # |z| <= 0.2
    spikes = torch.cat([torch.rand(8, 4, 2, generator=g) * 0.1, 0.5 + 0.4 * torch.rand(8, 4, 1, generator=g)], dim=2)
    x = torch.cat([body, spikes], dim=1)[:, torch.randperm(N, generator=g)]
    y = torch.zeros(8, dtype=torch.long)
    model = SpikeDetector()
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), y)  # 100% clean accuracy
    res = SaliencyDrop(num_drop=8, per_round=1)(model, x, y)
    assert res.success.all()  # accuracy 0%: the spikes are the most salient points
    keep = torch.stack([torch.randperm(N, generator=g)[: N - 8].sort().values for _ in range(8)])
    with torch.no_grad():
        rand_acc = (model(x.gather(1, keep[..., None].expand(-1, -1, 3))).argmax(1) == y).float().mean()
    assert rand_acc >= 0.75


def test_drop_is_deterministic(model, data):
    x, y = data
    a = SaliencyDrop(num_drop=12, per_round=3)(model, x, y)
    b = SaliencyDrop(num_drop=12, per_round=3)(model, x, y)
    assert torch.equal(a.points, b.points) and torch.equal(a.pred, b.pred)


def test_target_mode_uses_the_drawn_targets_and_differs_from_label_mode(model, data):
    x, y = data
    by_label = SaliencyDrop(num_drop=12, per_round=3)(model, x, y)
    by_target = SaliencyDrop(num_drop=12, per_round=3, saliency_label="target", seed=1)(model, x, y)
    assert by_target.target is None  # still untargeted: success = pred != label
    assert torch.equal(by_target.success, by_target.pred != y)
    differs = [not torch.equal(a, b) for a, b in zip(by_label.points, by_target.points)]
    assert any(differs)
    # one round by hand: the gradient is CE towards draw_targets(labels, C, seed, indices)
    t = draw_targets(y, C, 1, torch.arange(8))
    xg = x.clone().requires_grad_(True)
    F.cross_entropy(model(xg), t, reduction="sum").backward()
    dropped = saliency_scores(x, xg.grad).topk(3, dim=1).indices
    keep = torch.ones(8, N, dtype=torch.bool)
    keep[torch.arange(8)[:, None], dropped] = False
    one_round = SaliencyDrop(num_drop=3, per_round=3, saliency_label="target", seed=1)(model, x, y)
    assert torch.equal(one_round.points, x[keep].view(8, N - 3, 3))


def test_targets_are_refused_and_num_drop_must_be_below_n(model, data):
    x, y = data
    with pytest.raises(ValueError, match="untargeted"):
        SaliencyDrop(num_drop=4)(model, x, y, targets=(y + 1) % C)
    with pytest.raises(ValueError, match="num_drop"):
        SaliencyDrop(num_drop=N)(model, x, y)


@pytest.mark.parametrize(
    "kwargs", [{"num_drop": 0}, {"per_round": 0}, {"num_drop": 2.5}, {"alpha": -1.0}, {"saliency_label": "pred"}]
)
def test_invalid_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError):
        SaliencyDrop(**kwargs)
