"""Specification of the AdvPC attack (``advpc``, Hamdi et al. ECCV 2020; PROTOCOL.md sections 1-2)
on a tiny fixed PointNet and a tiny real ``PointCloudAutoencoder``."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import ATTACKS
from attacks.advpc import AdvPC
from models.autoencoder import PointCloudAutoencoder
from tiny_models import C, TinyPointNet, frozen

N = 32




def tiny_ae() -> PointCloudAutoencoder:
    torch.manual_seed(1)
    return PointCloudAutoencoder(num_points=N, code_size=16, encoder_widths=(16, 16), decoder_widths=(32,)).eval()


@pytest.fixture(scope="module")
def model() -> TinyPointNet:
    return frozen(TinyPointNet())


@pytest.fixture(scope="module")
def ae() -> PointCloudAutoencoder:
    return tiny_ae()


@pytest.fixture(scope="module")
def data(model) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, N, 3, generator=g)
    x = x / x.norm(dim=-1).amax(dim=1)[:, None, None]
    with torch.no_grad():
        labels = model(x).argmax(1)
    return x, labels


FAST = {"num_iter": 15, "restarts": 2, "lr": 0.1}


def test_registered_with_paper_defaults():
    entry = ATTACKS.get("advpc")
    d = entry.defaults
    assert (d["gamma"], d["clip"], d["restarts"], d["num_iter"], d["lr"]) == (0.25, 0.18, 2, 200, 1e-2)
    assert (d["loss"], d["kappa"], d["seed"], d["autoencoder"]) == ("ce", 0.0, 0, "pc-autoencoder")
    assert "_ae" not in d
    assert AdvPC().targeted is True
    assert entry.description


def test_missing_autoencoder_raises_clear_error(model, data):
    x, y = data
    with pytest.raises(ValueError, match="with_autoencoder") as err:
        AdvPC(num_iter=1)(model, x, y)
    assert "pc-autoencoder" in str(err.value)
    with torch.enable_grad(), pytest.raises(ValueError, match="with_autoencoder"):
        AdvPC(num_iter=1).attack(model, x, y, (y + 1) % C, indices=torch.arange(8))


def test_with_autoencoder_returns_self(ae):
    a = AdvPC()
    assert a.with_autoencoder(ae) is a


def test_every_point_within_per_point_bound(model, ae, data):
    x, y = data
    res = AdvPC(num_iter=10, lr=0.2).with_autoencoder(ae)(model, x, y)
    moved = (res.points - x).norm(dim=-1)
    assert float(moved.max()) <= 0.18 + 1e-6
    assert float(moved.max()) > 0.09  # the bound is actually reached
    small = AdvPC(num_iter=10, lr=0.2, clip=0.02).with_autoencoder(ae)(model, x, y)
    assert float((small.points - x).norm(dim=-1).max()) <= 0.02 + 1e-6


class _ShiftModel(nn.Module):
    """Class 1 wins when the cloud's mean x is positive, else class 0 (bias), class 2 when the
    cloud is far up in z (mean z > 5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mx = x[..., 0].mean(dim=1)
        mz = x[..., 2].mean(dim=1)
        z0 = torch.ones_like(mx)
        return torch.stack([z0, 100 * mx, 10 * (mz - 5)], dim=1)


def _constant_ae(z: float) -> PointCloudAutoencoder:
    """A real autoencoder whose output is the constant cloud ``(0, 0, z)`` for every input."""
    ae = tiny_ae()
    with torch.no_grad():
        last = ae.decoder[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, z]).repeat(N))
    return ae


def test_success_needs_both_conditions():
    x = torch.zeros(3, N, 3)
    x[..., 0] = -0.05  # label 0
    y = torch.zeros(3, dtype=torch.long)
    t = torch.ones(3, dtype=torch.long)
    m = _ShiftModel().eval()
    # AE(x') always classified as y: f(x') reaches the target, but nothing may count as success
    attack = AdvPC(num_iter=10, restarts=2, lr=0.05).with_autoencoder(_constant_ae(0.0))
    res = attack(m, x, y, t)
    assert torch.equal(res.pred, t)  # the direct condition holds ...
    assert not res.success.any()  # ... yet no success
    assert torch.all(res.iterations == 2 * 10)  # never kept: falls back to the last iterate
    # AE(x') always classified 2 != y: the same run now succeeds, keeping the closest iterate
    res2 = AdvPC(num_iter=10, restarts=2, lr=0.05).with_autoencoder(_constant_ae(10.0))(m, x, y, t)
    assert res2.success.all()
    assert torch.all(res2.iterations < 2 * 10)
    assert torch.all(res2.l2 <= res.l2 + 1e-6)


def test_targets_success_and_models_untouched(model, data):
    x, y = data
    ae = tiny_ae().train()  # the attack must restore the AE's mode and grad flags
    ae_before = {k: v.clone() for k, v in ae.state_dict().items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = AdvPC(**FAST).with_autoencoder(ae)(model, x, y)
    assert res.target is not None and not torch.any(res.target == y)
    with torch.no_grad():
        ae_pred = model(ae.eval()(res.points)).argmax(1)
    ae.train()
    assert torch.equal(res.success, (res.pred == res.target) & (ae_pred != y))
    assert torch.all((res.iterations >= 0) & (res.iterations <= 2 * FAST["num_iter"]))
    assert torch.all(res.iterations[~res.success] == 2 * FAST["num_iter"])
    assert all(torch.equal(v, ae.state_dict()[k]) for k, v in ae_before.items())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(m.training for m in ae.modules())
    assert all(p.requires_grad and p.grad is None for p in ae.parameters())
    assert not model.training and all(not p.requires_grad for p in model.parameters())


def test_margin_loss_ifd_preset_runs(model, ae, data, monkeypatch):
    """`loss="margin"` is what is optimised (every loss term, with kappa) and changes the clouds."""
    x, y = data
    import attacks.advpc as advpc_module

    seen = []
    real_loss = advpc_module.adversarial_loss

    def spy(logits, labels, targets, kind="ce", kappa=0.0):
        seen.append((kind, kappa, targets is not None))
        return real_loss(logits, labels, targets, kind, kappa)

    monkeypatch.setattr(advpc_module, "adversarial_loss", spy)
    ce = AdvPC(num_iter=3).with_autoencoder(ae)(model, x, y)
    assert set(seen) == {("ce", 0.0, True)}
    seen.clear()
    margin = AdvPC(num_iter=3, loss="margin", kappa=30.0).with_autoencoder(ae)(model, x, y, targets=ce.target)
    # every loss term (direct and through the autoencoder, each iteration of each restart) is the
    # targeted margin loss with the preset's kappa
    assert set(seen) == {("margin", 30.0, True)} and len(seen) == 2 * 2 * 3
    assert margin.points.shape == x.shape
    assert torch.equal(margin.target, ce.target)
    # same seed, same targets, same start noise: only the loss differs, and so do the clouds
    assert bool(((margin.points - ce.points).abs().amax(dim=(1, 2)) > 1e-3).all())  # on every sample


def test_deterministic_given_the_seed(model, ae, data):
    x, y = data
    a = AdvPC(num_iter=3, seed=3).with_autoencoder(ae)(model, x, y)
    b = AdvPC(num_iter=3, seed=3).with_autoencoder(ae)(model, x, y)
    c = AdvPC(num_iter=3, seed=4).with_autoencoder(ae)(model, x, y, targets=a.target)
    assert torch.equal(a.points, b.points) and torch.equal(a.target, b.target)
    assert torch.equal(a.success, b.success) and torch.equal(a.iterations, b.iterations)
    assert not torch.equal(a.points, c.points)  # the start noise depends on the seed


@pytest.mark.parametrize(
    "kwargs",
    [{"loss": "hinge"}, {"num_iter": 0}, {"restarts": 0}, {"lr": 0.0}, {"clip": -1.0}, {"gamma": 1.5}, {"kappa": -1.0}],
)
def test_invalid_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError):
        AdvPC(**kwargs)
