"""Specification of the kNN attack (``knn``, Tsai et al. AAAI 2020; PROTOCOL.md sections 1-2)
and its kNN smoothness penalty, on a tiny fixed PointNet."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import ATTACKS
from attacks.knn import KNN, knn_smoothness
from tiny_models import TinyPointNet, frozen, labelled_by, unit_clouds





@pytest.fixture(scope="module")
def model() -> TinyPointNet:
    return frozen(TinyPointNet())


@pytest.fixture(scope="module")
def data(model) -> tuple[torch.Tensor, torch.Tensor]:
    return labelled_by(model, unit_clouds(8, 64, seed=1))


#: a strong setting for the tiny model so that some samples succeed within few iterations.
FAST = {"num_iter": 30, "lr": 0.1, "clip": 1.0, "chamfer_weight": 0.01, "smooth_weight": 0.01}


def _brute_smoothness(cloud: torch.Tensor, k: int, alpha: float) -> float:
    n = cloud.shape[0]
    vals = []
    for i in range(n):
        d = sorted(float(((cloud[i] - cloud[j]) ** 2).sum()) for j in range(n) if j != i)
        vals.append(sum(d[:k]) / k)
    mean = sum(vals) / n
    std = (sum((v - mean) ** 2 for v in vals) / (n - 1)) ** 0.5  # unbiased, as torch.std
    thr = mean + alpha * std
    return sum(v for v in vals if v > thr) / n


def test_knn_smoothness_matches_brute_force():
    x = torch.randn(3, 40, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[1, 0] = torch.tensor([3.0, 3.0, 3.0], dtype=torch.float64)  # an outlier in one cloud
    got = knn_smoothness(x, k=5, alpha=1.05)
    want = [_brute_smoothness(x[b], 5, 1.05) for b in range(3)]
    assert got.shape == (3,)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    assert all(w > 0 for w in want)
    # other k / alpha
    got2 = knn_smoothness(x, k=3, alpha=0.5)
    torch.testing.assert_close(got2, torch.tensor([_brute_smoothness(x[b], 3, 0.5) for b in range(3)], dtype=torch.float64))


def test_knn_smoothness_zero_on_grid_positive_with_outlier_and_differentiable():
    g = torch.linspace(0, 1, 8)
    grid = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(1, -1, 3)
    # uniform grid: interior points share a value; border points have larger kNN distance only
    # slightly (fixed ratios), so the mass above threshold stays tiny
    flat = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(1, -1, 2)
    plane = torch.cat([flat, torch.zeros(1, 64, 1)], -1)
    base_plane = float(knn_smoothness(plane))
    base_grid = float(knn_smoothness(grid))
    spacing2 = float((g[1] - g[0]) ** 2)
    assert base_grid <= 0.5 * spacing2 and base_plane <= 0.5 * spacing2  # only border effects
    out = plane.clone()
    out[0, 0] = torch.tensor([5.0, 5.0, 5.0])
    v = knn_smoothness(out.requires_grad_(True))
    assert float(v.detach()) > 100 * max(base_plane, 1e-9) and float(v.detach()) > 0.1
    v.sum().backward()
    assert out.grad is not None and float(out.grad[0, 0].norm()) > 0


def test_registered_with_paper_defaults():
    entry = ATTACKS.get("knn")
    d = entry.defaults
    assert (d["num_iter"], d["lr"], d["k"], d["alpha"]) == (2500, 1e-3, 5, 1.05)
    assert (d["chamfer_weight"], d["smooth_weight"], d["clip"]) == (5.0, 3.0, 0.1)
    assert (d["loss"], d["kappa"], d["seed"]) == ("ce", 0.0, 0)
    assert "binary_steps" not in d
    assert KNN().targeted is True
    assert entry.description


def test_every_point_within_per_point_bound(model, data):
    x, y = data
    res = KNN(num_iter=25, lr=0.2)(model, x, y)  # a large lr pushes against the bound
    moved = (res.points - x).norm(dim=-1)
    assert float(moved.max()) <= 0.1 + 1e-6
    assert float(moved.max()) > 0.05  # the bound is actually reached
    small = KNN(num_iter=25, lr=0.2, clip=0.02)(model, x, y)
    assert float((small.points - x).norm(dim=-1).max()) <= 0.02 + 1e-6


def test_surface_projection_removes_inward_motion():
    """A flat z = 0 cloud with normals +z and a model that rewards moving points down:
    no output point may end below the plane."""
    g = torch.linspace(-0.5, 0.5, 8)
    flat = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(1, -1, 2)
    plane = torch.cat([flat, torch.zeros(1, 64, 1)], -1).repeat(2, 1, 1)

    class Down(nn.Module):  # logit of class 1 grows as points go down
        def forward(self, x):
            z = -x[..., 2].mean(dim=1) * 100
            return torch.stack([torch.zeros_like(z), z, torch.zeros_like(z) - 1], dim=1)

    labels = torch.zeros(2, dtype=torch.long)
    targets = torch.ones(2, dtype=torch.long)
    attack = KNN(num_iter=20, lr=0.05)
    normals = torch.zeros_like(plane)
    normals[..., 2] = 1.0
    with torch.enable_grad():
        adv, _ = attack.attack(Down().eval(), plane, labels, targets, indices=torch.arange(2), normals=normals)
    assert float(adv[..., 2].min()) >= -1e-6
    # estimated normals (flat cloud: sign fixed so +z) give the same guarantee
    res = attack(Down(), plane, labels, targets)
    assert float(res.points[..., 2].min()) >= -1e-6
    # the projection removes only the inward part: the points still move, tangentially
    for moved in (adv - plane, res.points - plane):
        assert float(moved[..., :2].norm(dim=-1).max()) > 0.05


def test_surface_projection_keeps_the_tangential_motion():
    """A model that rewards moving down AND along +x: the inward (down) part is projected away,
    the tangential (+x) part survives up to the per-point clip, on known and estimated normals."""
    g = torch.linspace(-0.5, 0.5, 8)
    flat = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(1, -1, 2)
    plane = torch.cat([flat, torch.zeros(1, 64, 1)], -1).repeat(2, 1, 1)

    class DownRight(nn.Module):  # the target logit grows as points go down and along +x
        def forward(self, x):
            z = -x[..., 2].mean(dim=1) * 100 + x[..., 0].mean(dim=1) * 10
            return torch.stack([torch.zeros_like(z) + 2, z, torch.zeros_like(z) - 1], dim=1)

    labels = torch.zeros(2, dtype=torch.long)
    targets = torch.ones(2, dtype=torch.long)
    # no distance terms: the adversarial loss alone decides the motion (target never reached)
    attack = KNN(num_iter=20, lr=0.05, chamfer_weight=0.0, smooth_weight=0.0)
    normals = torch.zeros_like(plane)
    normals[..., 2] = 1.0
    with torch.enable_grad():
        adv, _ = attack.attack(DownRight().eval(), plane, labels, targets, indices=torch.arange(2), normals=normals)
    res = attack(DownRight(), plane, labels, targets)
    assert not res.success.any()  # the final iterate is returned
    for out in (adv, res.points):
        moved = out - plane
        assert float(moved[..., 2].min()) >= -1e-6  # never below the plane
        assert float(moved[..., 2].abs().max()) <= 1e-6  # and nothing pushes up
        # every point moved along +x by the whole per-point budget, none along y
        torch.testing.assert_close(moved[..., 0], torch.full_like(moved[..., 0], 0.1), atol=1e-4, rtol=0)
        assert float(moved[..., 1].abs().max()) <= 1e-4


def test_targeted_success_means_prediction_equals_target_and_model_untouched(model, data):
    x, y = data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = KNN(**FAST)(model, x, y)
    assert res.target is not None and not torch.any(res.target == y)
    assert torch.equal(res.success, res.pred == res.target)
    assert res.success.any()
    assert torch.all((res.iterations >= 0) & (res.iterations <= FAST["num_iter"]))
    assert torch.all(res.iterations[~res.success] == FAST["num_iter"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_margin_loss_ifd_preset_runs(model, data):
    x, y = data
    res = KNN(num_iter=5, loss="margin", kappa=15.0)(model, x, y)
    assert torch.equal(res.success, res.pred == res.target)


def test_deterministic_given_the_seed(model, data):
    x, y = data
    a = KNN(num_iter=5, seed=3)(model, x, y)
    b = KNN(num_iter=5, seed=3)(model, x, y)
    c = KNN(num_iter=5, seed=4)(model, x, y, targets=a.target)
    assert torch.equal(a.points, b.points) and torch.equal(a.target, b.target)
    assert not torch.equal(a.points, c.points)  # the start noise depends on the seed


@pytest.mark.parametrize(
    "kwargs", [{"loss": "hinge"}, {"num_iter": 0}, {"lr": 0.0}, {"k": 0}, {"clip": -1.0}, {"chamfer_weight": -1.0}]
)
def test_invalid_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError):
        KNN(**kwargs)


def test_candidate_neighbour_searches_give_the_full_searchs_examples(model, data, monkeypatch):
    """The per-iteration searches over clean-cloud candidates (ReferenceNeighbours) are exact:
    the attack's examples equal those of a search over every point (candidates = N)."""
    import attacks.knn as knn_module

    x, y = data
    settings = {**FAST, "clip": 0.3}  # large moves: some points fall back to the full search
    local = KNN(**settings)(model, x, y)
    monkeypatch.setattr(knn_module, "_CANDIDATES", x.shape[1])
    full = KNN(**settings)(model, x, y)
    torch.testing.assert_close(local.points, full.points, rtol=0, atol=1e-5)
    assert torch.equal(local.success, full.success) and torch.equal(local.iterations, full.iterations)
