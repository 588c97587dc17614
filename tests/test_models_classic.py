"""The classic victims (PointNet, DGCNN, PointNet++ SSG): shapes, gradients, determinism, exactness."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models.pointnet2  # noqa: F401  (importing a family registers its models)
from models import MODELS
from models.dgcnn import EdgeConv, feature_knn
from models.pointnet import feature_transform_regularizer
from models.pointnet2 import ball_query

NAMES = ["pointnet", "pointnet-lite", "dgcnn", "dgcnn-small", "pointnet2-ssg"]
CLASSES = 5


def cloud(b: int, n: int, seed: int = 0) -> torch.Tensor:
    """``[b, n, 3]`` float32 points in the unit cube, seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, 3, generator=g) * 2 - 1


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS.build(name, num_classes=CLASSES)


# ----------------------------------------------------------------- every registered model


@pytest.mark.parametrize("name", NAMES)
def test_model_maps_points_to_logits_of_shape_b_by_c(name):
    model = build(name)
    logits = model(cloud(3, 128))
    assert logits.shape == (3, CLASSES)
    assert model.num_classes == CLASSES
    assert MODELS.get(name).description  # what `bench list models` shows


@pytest.mark.parametrize("name", NAMES)
def test_input_gradient_exists_is_finite_and_nonzero_and_input_is_untouched(name):
    model = build(name).eval()
    points = cloud(2, 96, seed=1)
    before = points.clone()
    points.requires_grad_(True)
    loss = F.cross_entropy(model(points), torch.tensor([0, 1]))
    (grad,) = torch.autograd.grad(loss, points)
    assert grad.shape == points.shape
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    assert torch.equal(points.detach(), before)


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_deterministic(name):
    model = build(name).eval()
    points = cloud(2, 96, seed=2)
    assert torch.equal(model(points), model(points))


@pytest.mark.parametrize("name", NAMES)
def test_eval_logits_of_a_sample_do_not_depend_on_the_rest_of_the_batch(name):
    model = build(name).eval()
    points = cloud(3, 96, seed=3)
    batched = model(points)
    for i in range(3):
        alone = model(points[i : i + 1])
        torch.testing.assert_close(alone[0], batched[i], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- PointNet


def test_pointnet_exposes_its_feature_transform_for_the_regularizer():
    model = build("pointnet").train()
    last = model.feature_tnet.regressor.layers[-1]
    with torch.no_grad():  # move off the identity, where the penalty is stationary
        last.bias.normal_(std=0.1)
    model(cloud(4, 64))
    transform = model.last_feature_transform
    assert transform.shape == (4, 64, 64)
    penalty = feature_transform_regularizer(transform)
    assert penalty > 0
    penalty.backward()
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0


def test_pointnet_regularization_loss_is_the_weighted_penalty_of_the_last_forward():
    model = build("pointnet").train()
    with torch.no_grad():
        model.feature_tnet.regressor.layers[-1].bias.normal_(std=0.1)
    model(cloud(2, 64))
    expected = 0.001 * feature_transform_regularizer(model.last_feature_transform)
    torch.testing.assert_close(model.regularization_loss(), expected)


def test_pointnet_lite_has_no_transforms_and_no_regularization():
    model = build("pointnet-lite")
    model(cloud(2, 64))
    assert model.input_tnet is None and model.feature_tnet is None
    assert model.last_feature_transform is None
    assert model.regularization_loss().item() == 0.0


def test_feature_transform_regularizer_is_zero_for_orthogonal_matrices():
    q, _ = torch.linalg.qr(torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert feature_transform_regularizer(q).item() == pytest.approx(0.0, abs=1e-8)
    # ||I - (2I)(2I)^T||_F^2 = 9 k
    twice = 2 * torch.eye(8).expand(2, 8, 8)
    assert feature_transform_regularizer(twice).item() == pytest.approx(72.0)


def test_pointnet_tnets_start_as_the_identity():
    model = build("pointnet").eval()
    transform = model.input_tnet(cloud(2, 32))
    torch.testing.assert_close(transform, torch.eye(3).expand(2, 3, 3))


def sphere_or_cube(label: int, n: int, g: torch.Generator) -> torch.Tensor:
    """``[n, 3]`` points on the unit sphere (label 0) or on the surface of the cube [-1, 1]^3 (1)."""
    v = torch.randn(n, 3, generator=g)
    if label == 0:
        return v / v.norm(dim=-1, keepdim=True)
    return v / v.abs().amax(dim=-1, keepdim=True)


def test_pointnet_lite_overfits_eight_clouds_of_two_easy_classes_in_30_steps():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * 4)
    points = torch.stack([sphere_or_cube(int(y), 128, g) for y in labels])
    torch.manual_seed(0)
    model = MODELS.build("pointnet-lite", num_classes=2)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        optimiser.zero_grad()
        F.cross_entropy(model(points), labels).backward()
        optimiser.step()
    model.eval()
    assert (model(points).argmax(dim=-1) == labels).all()


# ----------------------------------------------------------------- DGCNN


def reference_edgeconv(x: torch.Tensor, idx: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """The reference DGCNN layer: conv2d over ``[x_j - x_i, x_i]``, BN, LeakyReLU(0.2), max over k.

    ``x`` ``[B, N, C]``, ``idx`` ``[B, N, k]`` -> ``[B, N, out]``.
    """
    rows = torch.arange(x.shape[0]).reshape(-1, 1, 1)
    nbrs = x[rows, idx]  # [B, N, k, C]
    centre = x.unsqueeze(2).expand_as(nbrs)
    edges = torch.cat([nbrs - centre, centre], dim=-1).permute(0, 3, 1, 2)  # [B, 2C, N, k]
    y = F.leaky_relu(bn(conv(edges)), 0.2)
    return y.max(dim=-1).values.transpose(1, 2)


def edgeconv_pair(c: int, out: int, seed: int) -> tuple[EdgeConv, nn.Conv2d, nn.BatchNorm2d]:
    """Our EdgeConv and a reference conv2d + BN2d with the same (random, some negative) weights, float64."""
    g = torch.Generator().manual_seed(seed)
    ours = EdgeConv(c, out).double()
    conv = nn.Conv2d(2 * c, out, 1, bias=False).double()
    bn = nn.BatchNorm2d(out).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(out, 2 * c, 1, 1, generator=g, dtype=torch.float64))
        bn.weight.copy_(torch.randn(out, generator=g, dtype=torch.float64))  # about half negative
        bn.bias.copy_(torch.randn(out, generator=g, dtype=torch.float64))
        bn.running_mean.copy_(torch.randn(out, generator=g, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(out, generator=g, dtype=torch.float64) + 0.5)
        ours.linear.weight.copy_(conv.weight.reshape(out, 2 * c))
        ours.bn.load_state_dict(bn.state_dict())
    assert (bn.weight < 0).any() and (bn.weight > 0).any()
    return ours, conv, bn


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_project_then_gather_edgeconv_equals_the_reference_edgeconv(mode):
    ours, conv, bn = edgeconv_pair(c=6, out=8, seed=0)
    for m in (ours, conv, bn):
        m.train(mode == "train")
    x = torch.randn(2, 40, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    idx = feature_knn(x, 7)
    x_ours = x.clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    y_ours = ours(x_ours, idx)
    y_ref = reference_edgeconv(x_ref, idx, conv, bn)
    torch.testing.assert_close(y_ours, y_ref, rtol=1e-10, atol=1e-10)
    if mode == "eval":  # plain inference takes another path
        with torch.no_grad():
            torch.testing.assert_close(ours(x, idx), y_ref, rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(y_ref)
    (y_ours * weights).sum().backward()
    (y_ref * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.linear.weight.grad, conv.weight.grad.reshape(8, 12), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.bn.running_mean, bn.running_mean)
    torch.testing.assert_close(ours.bn.running_var, bn.running_var)


def test_feature_knn_picks_the_nearest_points_in_feature_space_self_included():
    x = torch.randn(2, 30, 16, generator=torch.Generator().manual_seed(0))
    idx = feature_knn(x, 5)
    dists = torch.cdist(x, x)
    expected = dists.topk(5, dim=-1, largest=False).indices
    assert torch.equal(idx.sort(dim=-1).values, expected.sort(dim=-1).values)
    assert (idx == torch.arange(30).reshape(1, -1, 1)).any(dim=-1).all()


# ----------------------------------------------------------------- PointNet++


def brute_force_ball(xyz: torch.Tensor, centre: torch.Tensor, radius: float) -> tuple[set[int], torch.Tensor]:
    """Indices of the points of ``xyz [N, 3]`` within ``radius`` of ``centre [3]``, and all squared distances."""
    d = ((xyz - centre) ** 2).sum(-1)
    return {j for j in range(xyz.shape[0]) if d[j] <= radius * radius}, d


@pytest.mark.parametrize("n", [200, 10])  # 10 < nsample: every ball is padded
def test_ball_query_returns_points_within_the_radius_padded_with_the_first(n):
    xyz = cloud(2, n, seed=4)
    centres = xyz[:, :25]
    radius, nsample = 0.5, 16
    idx = ball_query(xyz, centres, radius, nsample)
    assert idx.shape == (2, min(25, n), nsample)
    full_balls = 0
    for b in range(2):
        for s in range(centres.shape[1]):
            inside, d = brute_force_ball(xyz[b], centres[b, s], radius)
            row = idx[b, s].tolist()
            assert set(row) <= inside
            assert d[row[0]] == d.min()  # the first is the nearest point
            if len(inside) >= nsample:
                full_balls += 1
                assert len(set(row)) == nsample  # no padding while the ball has points left
                taken = d[row]
                rest = d[sorted(inside - set(row))]
                assert rest.numel() == 0 or taken.max() <= rest.min()  # the nearest ones
            else:
                k = len(inside)
                assert set(row[:k]) == inside
                assert row[k:] == [row[0]] * (nsample - k)
    if n == 200:
        assert full_balls > 0  # both regimes were exercised


def test_pointnet2_reduced_sizes_build_through_the_registry():
    torch.manual_seed(0)
    model = MODELS.build(
        "pointnet2-ssg",
        num_classes=CLASSES,
        sa_layers=((32, 0.4, 8, (16, 16, 32)), (8, 0.8, 8, (32, 32, 64))),
        global_mlp=(64, 128),
        head=(64, 32),
    )
    assert model(cloud(2, 64)).shape == (2, CLASSES)
    assert sum(p.numel() for p in model.parameters()) < 50_000


def test_pointnet2_takes_clouds_with_fewer_points_than_centres():
    model = build("pointnet2-ssg").eval()
    assert model(cloud(2, 40)).shape == (2, CLASSES)  # 40 < 128 < 512 centres


def test_dgcnn_takes_clouds_with_fewer_points_than_neighbours():
    model = build("dgcnn").eval()
    assert model(cloud(2, 12)).shape == (2, CLASSES)  # 12 < k = 20
