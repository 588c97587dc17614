"""The generic training loop: it learns, keeps the best epoch, validates inputs, augments sanely."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.core.config import ConfigError, TrainConfig
from benchmark.core.data import PointCloudDataset
from benchmark.core.training import (
    augment_points,
    classification_step,
    evaluate_accuracy,
    fit,
    split_validation,
)


class TinyPointNet(nn.Module):
    """A shared MLP + max-pool: enough to tell a sphere from a cube."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 32))
        self.head = nn.Linear(32, num_classes)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(points).amax(1))


def sphere_vs_cube(n: int = 40, points: int = 64, seed: int = 0) -> PointCloudDataset:
    rng = np.random.default_rng(seed)
    sphere = rng.normal(size=(n // 2, points, 3))
    sphere /= np.linalg.norm(sphere, axis=-1, keepdims=True)
    cube = rng.uniform(-1, 1, (n // 2, points, 3))
    face = rng.integers(0, 3, (n // 2, points))
    np.put_along_axis(cube, face[..., None], np.sign(rng.uniform(-1, 1, (n // 2, points, 1))), axis=2)
    cube /= np.sqrt(3)
    return PointCloudDataset("toy", "train", np.concatenate([sphere, cube]), np.repeat([0, 1], n // 2),
                             ("sphere", "cube"))


def test_fit_learns_a_separable_task() -> None:
    data = sphere_vs_cube()
    model = TinyPointNet()
    cfg = TrainConfig(epochs=15, lr=1e-2, batch_size=8, val_fraction=0.0)
    result = fit(model, data, cfg, classification_step(model), progress=False)
    assert evaluate_accuracy(model, data) == 1.0
    assert result.train_loss[-1] < result.train_loss[0]
    assert len(result.train_loss) == 15 and not model.training


def test_fit_restores_the_best_validating_epoch() -> None:
    data = sphere_vs_cube()
    model = TinyPointNet()
    scores = iter([0.1, 0.9, 0.2])
    snapshots = []

    def validate() -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    result = fit(model, data, TrainConfig(epochs=3, batch_size=8), classification_step(model),
                 validate=validate, progress=False)
    assert result.best_epoch == 1 and result.best_score == 0.9
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][key])


def test_fit_stops_after_patience_epochs_without_improvement_and_keeps_the_best() -> None:
    data = sphere_vs_cube()
    model = TinyPointNet()
    scores = iter([0.1, 0.9, 0.5, 0.9, 0.95, 0.99])  # 0.9 again is not an improvement
    snapshots = []

    def validate() -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    result = fit(model, data, TrainConfig(epochs=6, batch_size=8), classification_step(model),
                 validate=validate, patience=2, progress=False)
    assert result.stopped_early == 3 and len(result.val_score) == 4 and len(result.grad_norm) == 4
    assert result.best_epoch == 1
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][key])
    scores = iter([0.9, 0.1, 0.1, 0.1, 0.1])
    late = fit(TinyPointNet(), data, TrainConfig(epochs=5, batch_size=8), classification_step(TinyPointNet()),
               validate=lambda: next(scores), patience=1, min_epochs=4, progress=False)
    assert late.stopped_early == 3 and late.best_epoch == 0  # not before the 4th epoch
    scores = iter([0.9, 0.1, 0.1])
    ended = fit(TinyPointNet(), data, TrainConfig(epochs=3, batch_size=8), classification_step(TinyPointNet()),
                validate=lambda: next(scores), patience=2, progress=False)
    assert ended.stopped_early is None  # reaching the last epoch is not an early stop
    unlimited = fit(TinyPointNet(), data, TrainConfig(epochs=3, batch_size=8), classification_step(TinyPointNet()),
                    validate=lambda: 0.0, progress=False)
    assert unlimited.stopped_early is None and len(unlimited.val_score) == 3
    with pytest.raises(ValueError, match="patience"):
        fit(model, data, TrainConfig(epochs=1, batch_size=8), classification_step(model), patience=0, progress=False)


def test_fit_reports_pre_clipping_gradient_norms_and_calls_the_hook_after_backward() -> None:
    data = sphere_vs_cube()
    model = TinyPointNet()
    seen: list[float] = []

    def hook() -> None:  # gradients are present and not yet clipped
        seen.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))

    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, grad_clip=1e-3, val_fraction=0.0)
    result = fit(model, data, cfg, classification_step(model), after_backward=hook, progress=False)
    per_epoch = len(data) // 8
    assert len(seen) == 2 * per_epoch
    np.testing.assert_allclose(result.grad_norm, [np.mean(seen[:per_epoch]), np.mean(seen[per_epoch:])], rtol=1e-5)
    assert min(result.grad_norm) > 1e-3  # the norm before clipping, not after


def test_fit_is_deterministic_for_a_seed() -> None:
    data = sphere_vs_cube()
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = TinyPointNet()
        fit(model, data, TrainConfig(epochs=2, batch_size=8, jitter=0.01, rotate=True), classification_step(model),
            seed=3, progress=False)
        states.append(model.state_dict())
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key])


def test_fit_trains_only_the_given_parameters() -> None:
    data = sphere_vs_cube()
    model = TinyPointNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data, TrainConfig(epochs=1, batch_size=8), classification_step(model),
        params=model.head.parameters(), progress=False)
    after = model.state_dict()
    assert torch.equal(before["mlp.0.weight"], after["mlp.0.weight"])
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_fit_refuses_a_model_with_nothing_to_train() -> None:
    model = TinyPointNet().requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        fit(model, sphere_vs_cube(), TrainConfig(epochs=1), classification_step(model), progress=False)


def test_fit_stops_with_a_clear_error_when_the_loss_diverges() -> None:
    model = TinyPointNet()

    def nan_step(points, labels, indices):
        return model(points).sum() * float("nan")

    with pytest.raises(FloatingPointError, match="lower training.lr"):
        fit(model, sphere_vs_cube(), TrainConfig(epochs=1, batch_size=8), nan_step, progress=False)


def test_split_validation_is_stratified_and_disjoint() -> None:
    data = sphere_vs_cube(n=40)
    train, val = split_validation(data, 0.25, seed=0)
    assert len(train) == 30 and len(val) == 10
    assert np.bincount(val.labels).tolist() == [5, 5]
    joined = np.concatenate([train.points, val.points]).reshape(40, -1)
    assert len(np.unique(joined, axis=0)) == 40


def test_augmentation_scales_rotates_about_y_and_jitters_within_bounds() -> None:
    points = torch.randn(4, 100, 3)
    g = torch.Generator().manual_seed(0)
    rotated = augment_points(points, TrainConfig(scale_low=1.0, scale_high=1.0, rotate=True), g)
    torch.testing.assert_close(rotated[..., 1], points[..., 1])
    torch.testing.assert_close(rotated[..., [0, 2]].norm(dim=-1), points[..., [0, 2]].norm(dim=-1))
    jittered = augment_points(points, TrainConfig(scale_low=1.0, scale_high=1.0, jitter=0.01), g)
    assert (jittered - points).abs().max() <= 0.05 + 1e-6
    scaled = augment_points(points, TrainConfig(scale_low=0.8, scale_high=1.25), g)
    ratio = scaled / points
    assert ((ratio > 0.8 - 1e-5) & (ratio < 1.25 + 1e-5)).all()


def test_point_dropout_and_outliers_change_a_bounded_share_of_points() -> None:
    points = torch.rand(64, 200, 3) * 0.5 + 0.25  # inside [0.25, 0.75]^3: outliers are told apart by position
    g = torch.Generator().manual_seed(0)
    plain = TrainConfig(scale_low=1.0, scale_high=1.0)
    dropped = augment_points(points, dataclasses.replace(plain, point_dropout=0.5), g)
    assert dropped.shape == points.shape
    moved = (dropped != points).any(-1)
    assert torch.equal(dropped[moved], points[:, :1].expand_as(points)[moved])  # a dropped point takes the first's place
    share = moved.float().mean(1)
    assert share.max() < 0.65 and share.mean() > 0.15  # per cloud U[0, 0.5): never most of a cloud, not nothing
    noisy = augment_points(points, dataclasses.replace(plain, outliers=0.1), g)
    out = (noisy != points).any(-1)
    assert out.float().mean(1).max() < 0.2 and out.any()
    assert (noisy.abs() <= 1.0).all()
    again = augment_points(points, dataclasses.replace(plain, point_dropout=0.5), torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, dropped)  # the generator alone decides the draws


def test_augmentation_shares_outside_0_1_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="point_dropout"):
        TrainConfig(point_dropout=1.0)
    with pytest.raises(ConfigError, match="outliers"):
        TrainConfig(outliers=-0.1)
