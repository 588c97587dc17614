"""Specification of the AOF attack (``aof``, Liu et al. 2022; PROTOCOL.md sections 1-2) and its
graph spectrum, on a tiny fixed PointNet."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import ATTACKS
from attacks.aof import AOF, graph_laplacian, graph_spectrum, split_frequencies
from tiny_models import C, TinyPointNet, frozen

N = 64


@pytest.fixture(scope="module")
def model() -> TinyPointNet:
    return frozen(TinyPointNet())


def _clouds(b: int, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    x = torch.randn(b, N, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return x / x.norm(dim=-1).amax(dim=1)[:, None, None]


@pytest.fixture(scope="module")
def data(model) -> tuple[torch.Tensor, torch.Tensor]:
    x = _clouds(8)
    with torch.no_grad():
        labels = model(x).argmax(1)
    return x, labels


SMALL = {"num_low": 10, "k": 8}
#: a strong setting for the tiny model so that some samples succeed within few iterations.
FAST = {**SMALL, "num_iter": 15, "restarts": 2, "lr": 0.1, "clip": 0.5, "kappa": 0.0}


def test_laplacian_symmetric_psd_connected_orthonormal_eigenvectors():
    x = _clouds(3, seed=2, dtype=torch.float64)
    lap = graph_laplacian(x, k=8)
    assert lap.shape == (3, N, N)
    torch.testing.assert_close(lap, lap.transpose(1, 2), rtol=0, atol=0)
    torch.testing.assert_close(lap.sum(dim=2), torch.zeros(3, N, dtype=torch.float64), rtol=0, atol=1e-12)
    off = lap - torch.diag_embed(torch.diagonal(lap, dim1=1, dim2=2))
    assert bool((off <= 0).all())
    # each row has at least k neighbours with weights exp(-d^2) in (0, 1]
    assert bool(((off < 0).sum(dim=2) >= 8).all()) and bool((off >= -1).all())
    vecs, vals = graph_spectrum(x, k=8)
    assert vecs.shape == (3, N, N) and vals.shape == (3, N)
    assert bool((vals[:, 1:] >= vals[:, :-1]).all())  # ascending
    assert float(vals.min()) > -1e-10  # PSD
    torch.testing.assert_close(vals[:, 0], torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-10)
    assert float(vals[:, 1].min()) > 1e-6  # one zero eigenvalue: the graph is connected
    eye = torch.eye(N, dtype=torch.float64).expand(3, N, N)
    torch.testing.assert_close(vecs.transpose(1, 2) @ vecs, eye, rtol=0, atol=1e-10)
    torch.testing.assert_close(vecs @ torch.diag_embed(vals) @ vecs.transpose(1, 2), lap, rtol=0, atol=1e-10)
    # the zero-eigenvalue eigenvector is constant
    v0 = vecs[:, :, 0]
    torch.testing.assert_close(v0.abs(), torch.full_like(v0, N**-0.5), rtol=0, atol=1e-8)


def test_weights_match_brute_force():
    x = _clouds(1, seed=3, dtype=torch.float64)[0]
    k = 5
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    a = torch.zeros(N, N, dtype=torch.float64)
    for i in range(N):
        order = [j for j in torch.argsort(d2[i]).tolist() if j != i][:k]
        for j in order:
            a[i, j] = torch.exp(-d2[i, j])
    a = torch.maximum(a, a.T)
    want = torch.diag(a.sum(1)) - a
    torch.testing.assert_close(graph_laplacian(x[None], k=k)[0], want, rtol=1e-12, atol=1e-12)


def test_lfc_plus_hfc_reconstructs_and_full_basis_has_no_hfc():
    x = _clouds(2, seed=4, dtype=torch.float64)
    vecs, _ = graph_spectrum(x, k=8)
    coeff, low, high = split_frequencies(x, vecs[:, :, :10])
    assert coeff.shape == (2, 10, 3)
    torch.testing.assert_close(low + high, x, rtol=0, atol=1e-12)
    assert float(high.norm()) > 1e-3  # a non-trivial split
    # the parts are orthogonal per coordinate
    torch.testing.assert_close((low * high).sum(dim=1), torch.zeros(2, 3, dtype=torch.float64), rtol=0, atol=1e-10)
    _, low_all, high_all = split_frequencies(x, vecs)
    torch.testing.assert_close(high_all, torch.zeros_like(x), rtol=0, atol=1e-10)
    torch.testing.assert_close(low_all, x, rtol=0, atol=1e-10)


def test_registered_with_protocol_defaults():
    entry = ATTACKS.get("aof")
    d = entry.defaults
    assert (d["num_low"], d["gamma"], d["clip"], d["restarts"], d["num_iter"]) == (100, 0.25, 0.18, 2, 200)
    assert (d["lr"], d["loss"], d["kappa"], d["k"], d["seed"]) == (1e-2, "margin", 30.0, 30, 0)
    assert AOF().targeted is False
    assert entry.description


def test_untargeted_rejects_targets(model, data):
    x, y = data
    with pytest.raises(ValueError, match="untargeted"):
        AOF(**SMALL, num_iter=1, restarts=1)(model, x, y, targets=(y + 1) % C)


def test_every_point_within_per_point_bound(model, data):
    x, y = data
    res = AOF(**SMALL, num_iter=10, lr=0.5, kappa=1e3)(model, x, y)  # large lr, unreachable margin
    moved = (res.points - x).norm(dim=-1)
    assert float(moved.max()) <= 0.18 + 1e-6
    assert float(moved.max()) > 0.1  # the bound is actually reached
    small = AOF(**SMALL, num_iter=10, lr=0.5, clip=0.02, kappa=1e3)(model, x, y)
    assert float((small.points - x).norm(dim=-1).max()) <= 0.02 + 1e-6


def test_success_and_bookkeeping_on_tiny_model(model, data):
    x, y = data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = AOF(**FAST)(model, x, y)
    total = FAST["restarts"] * FAST["num_iter"]
    assert res.target is None
    assert torch.equal(res.success, res.pred != y)
    kept = res.iterations < total
    assert kept.any()
    assert torch.all(res.success[kept])  # a kept iterate fools the model on the full cloud
    # ... and on its LFC
    vecs, _ = graph_spectrum(x, k=8)
    _, low, _ = split_frequencies(res.points, vecs[:, :, :10])
    with torch.no_grad():
        assert torch.all(model(low).argmax(1)[kept] != y[kept])
    assert torch.all((res.iterations >= 0) & (res.iterations <= total))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


class _HighFreqDetector(nn.Module):
    """Predicts class 1 iff the input has high-frequency energy w.r.t. a fixed basis (so every
    full cloud is 'fooled' but no LFC ever is), with a gradient path through the input."""

    def __init__(self, basis: torch.Tensor) -> None:
        super().__init__()
        self.basis = basis

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        high = z - self.basis @ (self.basis.transpose(1, 2) @ z)
        energy = (high**2).flatten(1).sum(1)
        s = 1e3 * (energy - 1e-6)
        return torch.stack([torch.zeros_like(s) + 0 * z.sum((1, 2)), s], dim=1)


def test_success_requires_both_full_cloud_and_lfc_fooled():
    x = _clouds(2, seed=5)
    vecs, _ = graph_spectrum(x, k=8)
    det = _HighFreqDetector(vecs[:, :, :10]).eval()
    labels = torch.zeros(2, dtype=torch.long)
    attack = AOF(**SMALL, num_iter=4, restarts=2)
    res = attack(det, x, labels)
    # f(x') != y on every iterate, but f(LFC) == y: no iterate counts as a success
    assert torch.all(res.pred != labels)
    assert torch.all(res.iterations == 8)
    with torch.no_grad():
        both = det(x).argmax(1)  # = 1 on the clean full cloud
    assert torch.all(both == 1)

    class AlwaysOne(nn.Module):
        def forward(self, z):
            s = 0 * z.sum((1, 2))
            return torch.stack([s, s + 1], dim=1)

    res2 = attack(AlwaysOne(), x, labels)
    # every iterate succeeds (they differ only by the 1e-7 start noise): one is kept
    assert torch.all(res2.iterations < 8)
    torch.testing.assert_close(res2.points, x, atol=1e-5, rtol=0)


def test_deterministic_given_the_seed(model, data):
    x, y = data
    a = AOF(**SMALL, num_iter=3, seed=3)(model, x, y)
    b = AOF(**SMALL, num_iter=3, seed=3)(model, x, y)
    assert torch.equal(a.points, b.points) and torch.equal(a.iterations, b.iterations)


@pytest.mark.parametrize(
    "kwargs",
    [{"loss": "hinge"}, {"num_iter": 0}, {"restarts": 0}, {"num_low": 0}, {"lr": 0.0}, {"k": 0}, {"clip": -1.0}, {"gamma": 1.5}],
)
def test_invalid_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError):
        AOF(**kwargs)


def test_too_few_points_raise(model):
    x = _clouds(1)
    with pytest.raises(ValueError, match="num_low"):
        AOF(num_low=N + 1, k=8, num_iter=1)(model, x, torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="k \\+ 1"):
        AOF(num_low=10, k=N, num_iter=1)(model, x, torch.zeros(1, dtype=torch.long))
