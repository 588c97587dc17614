"""IF-Defense (ConvONet-Opt): the restoration on an exact sphere occupancy, the repulsion,
batches with different SOR survivors, the adaptive gradients, the occupancy training with
its IoU and cache, and `bench run` end to end."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_models import C, TinyPointNet, frozen
from torch import Tensor, nn

from benchmark.core.config import TrainConfig
from benchmark.core.data import PointCloudDataset, load_dataset
from benchmark.core.geometry import knn
from benchmark.core.registry import DEFENSES
from benchmark.store import ResultStore
from defenses.base import DefenseContext, straight_through
from defenses.if_defense import (
    IFDefense,
    Restoration,
    fit_to_cube,
    optimize_to_surface,
    repulsion_loss,
)
from defenses.sor import sor_mask
from models.occnet import ConvOccupancyNetwork

SURFACE = math.log(0.2 / 0.8)  # the logit of the 0.2 occupancy level
#: A network small enough for seconds of CPU: 3 planes 16 x 16, U-Net depth 2, 8 channels.
TINY = {"plane_resolution": 16, "unet_depth": 2, "channels": 8}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SphereOccupancy(nn.Module):
    """A stand-in occupancy network with the exact answer for a sphere: it encodes a cloud as
    the centre and mean radius of its (unmasked) points, and its 0.2 level set is that sphere."""

    def __init__(self, sharpness: float = 100.0) -> None:
        super().__init__()
        self.sharpness = sharpness
        self.anchor = nn.Parameter(torch.zeros(()))  # a parameter, so it has a device

    def encode(self, points: Tensor, mask: Tensor | None = None) -> Tensor:
        weight = torch.ones(points.shape[:2]) if mask is None else mask.to(points.dtype)
        weight = weight.unsqueeze(-1)
        centre = (points * weight).sum(1) / weight.sum(1)
        radius = ((points - centre.unsqueeze(1)).norm(dim=-1, keepdim=True) * weight).sum(1) / weight.sum(1)
        return torch.cat([centre, radius], 1)  # [B, 4]

    def decode(self, query: Tensor, code: Tensor, twice_differentiable: bool = False) -> Tensor:
        dist = (query - code[:, None, :3]).norm(dim=-1)
        return self.sharpness * (code[:, None, 3] - dist) + SURFACE


def sphere_logits(radius: float = 0.4, sharpness: float = 100.0):
    return lambda q: sharpness * (radius - q.norm(dim=-1)) + SURFACE


def on_sphere(b: int, n: int, noise: float, seed: int = 0, radius: float = 1.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(b, n, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True)
    return d * (radius + noise * torch.randn(b, n, 1, generator=g))


def off_sphere(x: Tensor) -> float:
    """Mean relative distance of the points to their best-fitting sphere (least squares on
    ``|x|^2 = 2 c.x + k``; the centroid is no good centre: a random subset of a sphere's
    points is lopsided)."""
    a = torch.cat([2 * x, torch.ones_like(x[..., :1])], -1).double()
    sol = torch.linalg.lstsq(a, x.double().square().sum(-1, keepdim=True)).solution  # [B, 4, 1]
    centre = sol[:, :3, 0].unsqueeze(1)
    r = (x.double() - centre).norm(dim=-1)
    return float((r / r.mean(dim=1, keepdim=True) - 1).abs().mean())


def with_sphere(**params) -> Restoration:
    return Restoration(IFDefense(**params), SphereOccupancy())


# --------------------------------------------------------------------------- registry and pieces


def test_if_defense_is_registered_with_the_protocol_numbers():
    entry = DEFENSES.get("if-defense")
    d = entry.defaults
    assert entry.obj is IFDefense
    assert (d["sor_k"], d["sor_alpha"], d["padding_scale"], d["input_points"], d["num_points"]) == (2, 1.1, 0.9, 600,
                                                                                                   1024)
    assert (d["init_sigma"], d["steps"], d["lr"], d["threshold"]) == (0.01, 200, 1e-3, 0.2)
    assert (d["repulsion_weight"], d["repulsion_k"], d["repulsion_radius"], d["repulsion_h"]) == (500.0, 5, 0.07,
                                                                                                  0.03)
    assert (d["plane_resolution"], d["unet_depth"], d["channels"]) == (64, 4, 32)
    assert d["adaptive"] == "bpda"
    assert IFDefense.kind == "preprocess" and IFDefense.gradient == "bpda" and IFDefense.randomized


def test_a_wrong_adaptive_mode_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'bpda', 'unroll'"):
        IFDefense(adaptive="eot")


def test_fit_to_cube_spans_the_padded_cube_and_ignores_masked_points():
    x = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 1.0, 0.0], [1.0, 0.0, 0.5], [50.0, 50.0, 50.0]]])
    mask = torch.tensor([[True, True, True, False]])
    cube, centre, _ = fit_to_cube(x, mask, 0.9)
    kept = cube[0, :3]
    assert torch.allclose(centre[0, 0], torch.tensor([1.0, 1 / 3, 0.5 / 3]))
    assert torch.allclose((kept.amax(0) - kept.amin(0)).max(), torch.tensor(0.9))
    assert torch.allclose(kept.mean(0), torch.zeros(3), atol=1e-6)


def test_repulsion_on_candidates_equals_the_full_search():
    x = on_sphere(2, 200, 0.0, radius=0.4)
    candidates = knn(x, 16, exclude_self=True)[0]
    assert torch.allclose(repulsion_loss(x, candidates=candidates), repulsion_loss(x))


def test_nearest_straight_through_sends_each_gradient_to_the_nearest_input_point():
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]], requires_grad=True)
    out = torch.tensor([[[0.1, 0.9, 0.0], [0.0, 1.1, 0.0], [0.0, 0.0, 0.1]]])
    y = straight_through(x, out)
    assert torch.equal(y, out)
    y.backward(torch.tensor([[[1.0, 0, 0], [2.0, 0, 0], [0, 0, 5.0]]]))
    assert x.grad[0].tolist() == [[0, 0, 5.0], [0, 0, 0], [3.0, 0, 0], [0, 0, 0]]


# --------------------------------------------------------------------------- the restoration


def test_restoration_pulls_displaced_points_back_onto_the_sphere():
    x = on_sphere(2, 512, 0.03, radius=0.4)
    before = float((x.norm(dim=-1) - 0.4).abs().mean())
    out = optimize_to_surface(x, sphere_logits(0.4), steps=100, occupancy_weight=512.0)
    after = float((out.norm(dim=-1) - 0.4).abs().mean())
    assert before > 0.02 and after < 0.1 * before


def test_repulsion_spreads_a_clumped_cloud_and_nothing_else_moves_it():
    flat = lambda q: torch.full(q.shape[:2], SURFACE)  # noqa: E731 - occupancy exactly at the level: no pull
    clump = on_sphere(1, 200, 0.0, radius=0.03) * torch.rand(1, 200, 1, generator=torch.Generator().manual_seed(2))
    spacing = lambda x: float(knn(x, 1, exclude_self=True)[1].sqrt().mean())  # noqa: E731
    spread = optimize_to_surface(clump, flat, steps=100)
    assert spacing(spread) > 2 * spacing(clump)
    assert torch.equal(optimize_to_surface(clump, flat, steps=20, repulsion_weight=0.0), clump)


def test_defense_restores_a_noisy_sphere_into_the_unit_sphere():
    x = on_sphere(2, 300, 0.04)
    x = x / x.norm(dim=-1).amax(1)[:, None, None]  # unit-sphere normalised, as the datasets are
    out = with_sphere(num_points=256, steps=60).preprocess(x, torch.Generator().manual_seed(0))
    assert out.shape == (2, 256, 3)
    assert torch.allclose(out.norm(dim=-1).amax(1), torch.ones(2), atol=1e-5)
    assert torch.allclose(out.mean(1), torch.zeros(2, 3), atol=1e-5)
    assert off_sphere(out) < 0.2 * off_sphere(x)


def test_clouds_with_different_sor_survivors_are_restored_in_one_batch():
    x = on_sphere(3, 200, 0.01, seed=3)  # fewer points than the 600 the network encodes
    far = on_sphere(3, 200, 0.0, seed=4) * 3.0
    for i, outliers in enumerate((0, 5, 10)):  # scattered far points: SOR drops them
        x[i, :outliers] = far[i, :outliers]
    mask = sor_mask(x, 2, 1.1)
    assert len(set(mask.sum(1).tolist())) == 3 and not mask[1, :5].any() and not mask[2, :10].any()

    out = with_sphere(num_points=128, steps=40).preprocess(x, torch.Generator().manual_seed(0))
    assert out.shape == (3, 128, 3) and torch.isfinite(out).all()
    assert max(off_sphere(out[i:i + 1]) for i in range(3)) < 0.01  # outliers gone, sphere restored


def test_the_restoration_is_seeded_by_the_generator():
    defense, x = with_sphere(num_points=64, steps=5), on_sphere(2, 100, 0.02)
    first = defense.preprocess(x, torch.Generator().manual_seed(1))
    assert torch.equal(first, defense.preprocess(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, defense.preprocess(x, torch.Generator().manual_seed(2)))


# --------------------------------------------------------------------------- adaptive gradients


def attack_gradient(model: nn.Module, x: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
    x = x.clone().requires_grad_(True)
    model.reseed(seed)
    logits = model.attackable()(x)
    logits[:, 0].sum().backward()
    return logits.detach(), x.grad


def test_bpda_gradient_reaches_the_input_and_leaves_the_forward_unchanged():
    model = with_sphere(num_points=64, steps=5).wrap(frozen(TinyPointNet(smooth=True)))
    x = on_sphere(2, 100, 0.02)
    logits, grad = attack_gradient(model, x)
    model.reseed(0)
    with torch.no_grad():
        assert torch.equal(logits, model(x))
    assert model.gradient == "bpda" and logits.shape == (2, C)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("network", ["sphere", "conv-onet"])
def test_unrolled_gradient_differs_from_bpda_and_keeps_the_forward(network):
    victim = frozen(TinyPointNet(smooth=True))
    defenses = {}
    for mode in ("bpda", "unroll"):
        config = IFDefense(num_points=64, steps=6, adaptive=mode, unroll_steps=2, input_points=50, **TINY)
        torch.manual_seed(0)
        defenses[mode] = Restoration(config, SphereOccupancy() if network == "sphere" else ConvOccupancyNetwork(
            c_dim=8, hidden_dim=8, resolution=16, unet_depth=2, unet_filters=8).eval().requires_grad_(False))
    x = on_sphere(2, 100, 0.02)
    unrolled = defenses["unroll"].wrap(victim)
    logits, grad = attack_gradient(unrolled, x)
    _, bpda = attack_gradient(defenses["bpda"].wrap(victim), x)
    unrolled.reseed(0)
    with torch.no_grad():
        assert torch.allclose(logits, unrolled(x), atol=1e-5)
    assert unrolled.gradient == "exact"
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert not torch.allclose(grad, bpda)


# --------------------------------------------------------------------------- the occupancy network


@pytest.fixture(scope="module")
def shapes() -> PointCloudDataset:
    """40 SynthShapes training clouds of 256 points, with their solids."""
    return load_dataset("synthshapes", "train", num_points=256, options={"train_size": 40})


def context(train, tmp_path, messages: list[str], epochs: int = 15) -> DefenseContext:
    return DefenseContext(
        victim=frozen(TinyPointNet()), train=train, cache_dir=tmp_path, victim_hash="tiny",
        train_config=lambda name: TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, warmup=0.0),
        progress=False, log=messages.append,
    )


def test_occupancy_training_beats_the_constant_prediction_then_loads_from_the_cache(shapes, tmp_path):
    """Floor: IoU 0.2 on 8 held-out shapes (60 steps of a tiny network reach ~0.3-0.35 here),
    at least 5x the IoU of the best constant answer ("all inside": the objects fill ~3% of the
    padded cube); a network that ignored its input could not beat that, so the floor shows
    occupancy learned from the encoded points, on shapes it never saw."""
    params = {**TINY, "iou_clouds": 8, "train_queries": 1024, "iou_queries": 4096, "input_points": 200,
              "num_points": 128, "steps": 5}
    first: list[str] = []
    defended = IFDefense(**params)(context(shapes, tmp_path, first))
    meta = defended.meta
    assert meta["source"] == "trained" and meta["cached"] is False and meta["iou_clouds"] == 8
    assert meta["iou_all_inside"] < 0.1
    assert meta["iou"] > max(0.2, 5 * meta["iou_all_inside"]), meta
    assert any("epoch 15/15" in m for m in first)
    x = torch.from_numpy(shapes.points[:2])
    with torch.no_grad():
        assert defended(x).shape == (2, C)

    second: list[str] = []
    again = IFDefense(**{**params, "steps": 3})(context(shapes, tmp_path, second))  # inference-only change
    assert again.meta["cached"] is True and again.meta["iou"] == meta["iou"]
    assert any("loaded cached training" in m for m in second) and not any("epoch" in m for m in second)


def test_data_without_solids_asks_for_convonet_weights(tmp_path):
    clouds = PointCloudDataset("modelnet40", "train", on_sphere(4, 64, 0.0).numpy(), np.arange(4) % 2, ("a", "b"))
    with pytest.raises(ValueError, match=r"(?s)no solid shapes.*defenses\.if-defense\.pretrained="):
        IFDefense(**TINY)(context(clouds, tmp_path, []))


def test_pretrained_weights_are_loaded_instead_of_training(shapes, tmp_path):
    torch.manual_seed(5)
    source = IFDefense(**TINY).build_network()
    path = tmp_path / "convonet.pth"
    torch.save(source.state_dict(), path)
    messages: list[str] = []
    defense = IFDefense(**TINY, pretrained=str(path))
    defended = defense(context(shapes, tmp_path, messages))
    assert defended.meta["source"] == "pretrained" and not any("epoch" in m for m in messages)
    for name, value in source.state_dict().items():
        assert torch.equal(defended.preprocess.__self__.network.state_dict()[name], value)
    with pytest.raises(FileNotFoundError, match="defenses.if-defense.pretrained="):
        IFDefense(**TINY, pretrained=str(tmp_path / "missing.pth"))(context(shapes, tmp_path, []))


# --------------------------------------------------------------------------- end to end


def test_bench_run_smoke_with_if_defense_and_pgd(tmp_path):
    env = {**os.environ, "PCRB_CACHE_DIR": str(tmp_path / "cache"), "PCRB_NO_TUNE": "1", "COLUMNS": "200"}
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark", "run", "--profile", "smoke", "--defense", "if-defense", "--attack", "pgd",
         "--set", "victim=pointnet-lite", "--limit", "8", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = ResultStore(out).read("synthshapes")
    rows = frame[frame["defense"] == "if-defense"]
    assert sorted(rows["attack"]) == ["clean", "pgd"] and set(rows["status"]) == {"ok"}, proc.stdout[-2000:]
    assert "if-defense" in proc.stdout
