"""Specification of the C&W point-adding attacks ``add-cd`` / ``add-hd`` on a tiny fixed
PointNet (PROTOCOL.md section 2, "add-cd, add-hd")."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attacks import ATTACKS
from attacks.add import AddCD, AddHD, critical_point_indices
from benchmark.core.geometry import chamfer_distance, hausdorff_distance
from tiny_models import TinyPointNet, frozen

N = 64


@pytest.fixture(scope="module")
def model() -> TinyPointNet:
    return frozen(TinyPointNet())


@pytest.fixture(scope="module")
def data(model) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, N, 3, generator=g)
    x = x / x.norm(dim=-1).amax(dim=1)[:, None, None]
    with torch.no_grad():
        labels = model(x).argmax(1)
    return x, labels


#: a strong, short setting for the tiny model so that some samples succeed.
FAST = {"num_add": 8, "init_weight": 0.1, "max_weight": 10.0, "lr": 0.1, "num_iter": 15, "binary_steps": 2}


@pytest.mark.parametrize(
    ("name", "init_w", "max_w"), [("add-cd", 5e3, 4e4), ("add-hd", 2e2, 9e2)]
)
def test_registered_with_paper_defaults(name, init_w, max_w):
    entry = ATTACKS.get(name)
    d = entry.defaults
    assert (d["num_add"], d["binary_steps"], d["num_iter"], d["lr"]) == (512, 10, 500, 1e-2)
    assert (d["init_weight"], d["max_weight"]) == (init_w, max_w)
    assert (d["loss"], d["kappa"], d["seed"]) == ("ce", 0.0, 0)
    assert entry.description
    assert (AddCD if name == "add-cd" else AddHD).targeted is True


def test_critical_points_equal_brute_force_argsort():
    model = frozen(TinyPointNet(smooth=True))
    x = torch.randn(3, N, 3, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([1, 4, 0])
    idx = critical_point_indices(model, x, targets, 10)
    assert idx.shape == (3, 10)
    for b in range(3):
        xb = x[b : b + 1].clone().requires_grad_(True)
        F.cross_entropy(model(xb), targets[b : b + 1]).backward()
        norms = [float((xb.grad[0, i] ** 2).sum()) for i in range(N)]
        assert len(set(norms)) == N  # no ties: the order is well defined
        brute = sorted(range(N), key=lambda i: -norms[i])[:10]
        assert idx[b].tolist() == brute
    # num_add > N: every point is critical
    assert critical_point_indices(model, x, targets, 2 * N).shape == (3, N)


@pytest.mark.parametrize("cls", [AddCD, AddHD])
def test_output_keeps_original_and_adds_num_add_points(model, data, cls):
    x, y = data
    res = cls(**FAST)(model, x, y)
    assert res.points.shape == (8, N + 8, 3)
    assert torch.equal(res.points[:, :N], x)
    assert torch.equal(res.success, res.pred == res.target)  # targeted: pred == target
    assert not torch.any(res.target == y)
    assert res.success.any()
    with torch.no_grad():
        assert torch.equal(model(res.points).argmax(1)[res.success], res.target[res.success])


def test_added_points_start_at_the_critical_points_and_distance_uses_added_only(model, data):
    x, y = data
    # a tiny lr and one iteration: the added points are the critical points (+ 1e-7 noise + one step)
    res = AddCD(num_add=6, num_iter=1, binary_steps=1, lr=1e-9)(model, x, y)
    idx = critical_point_indices(model, x, res.target, 6)
    crit = torch.gather(x, 1, idx[..., None].expand(-1, -1, 3))
    torch.testing.assert_close(res.points[:, N:], crit, atol=1e-5, rtol=0)
    # added copies of original points are at distance ~0 from the original cloud
    added = res.points[:, N:]
    assert float(chamfer_distance(added, x).max()) < 1e-8
    assert float(hausdorff_distance(added, x).max()) < 1e-8


def test_num_add_larger_than_n_uses_all_points(model, data):
    x, y = data
    res = AddHD(num_add=512, num_iter=2, binary_steps=1)(model, x[:2], y[:2])
    assert res.points.shape == (2, 2 * N, 3)
    assert torch.equal(res.points[:, :N], x[:2])


@pytest.mark.parametrize("cls", [AddCD, AddHD])
def test_deterministic_given_the_seed(model, data, cls):
    x, y = data
    a = cls(**FAST, seed=3)(model, x, y)
    b = cls(**FAST, seed=3)(model, x, y)
    assert torch.equal(a.points, b.points) and torch.equal(a.target, b.target)
    assert torch.equal(a.iterations, b.iterations)


def test_model_left_untouched(model, data):
    x, y = data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    AddCD(**FAST)(model, x, y)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not model.training


@pytest.mark.parametrize(
    "kwargs",
    [{"loss": "hinge"}, {"num_add": 0}, {"binary_steps": 0}, {"num_iter": 0}, {"lr": 0.0}, {"init_weight": 0.0}, {"max_weight": 1.0}],
)
def test_invalid_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError):
        AddHD(**kwargs)
