"""Specification of benchmark.core.projection: PointCLIP V2's realistic depth projection.

Known projections (a flat square, a sphere), a dense brute-force reference of the hard
pipeline, gradients of both modes, layout of multi-view output, and a real airplane
rendered to a PNG.
"""
from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.core.projection import (
    POINTCLIP_V2_VIEWS,
    REFERENCE_BIAS_EULER,
    REFERENCE_EULER,
    DepthProjector,
    ProjectionConfig,
    euler_to_matrix,
    project_depth,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IDENTITY = {"euler": (0.0, 0.0, 0.0), "bias_euler": (0.0, 0.0, 0.0)}


def random_clouds(b: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    x = x * torch.tensor([1.0, 0.5, 0.3])  # anisotropic: views differ
    return x / x.norm(dim=-1).amax(dim=1)[:, None, None]


def fibonacci_sphere(n: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    polar = torch.acos(1 - 2 * i / n)
    azim = math.pi * (1 + 5**0.5) * i
    pts = torch.stack([polar.sin() * azim.cos(), polar.sin() * azim.sin(), polar.cos()], -1)
    return pts.float()[None]


def flat_square(side: int = 64, dtype=torch.float32) -> torch.Tensor:
    t = torch.linspace(-1.0, 1.0, side, dtype=torch.float64)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx, yy, torch.zeros_like(xx)], -1).reshape(1, -1, 3).to(dtype)


def write_png(path: Path, gray: np.ndarray) -> None:
    """Minimal 8-bit grayscale PNG writer (stdlib only)."""
    h, w = gray.shape
    raw = b"".join(b"\x00" + gray[r].astype(np.uint8).tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path.write_bytes(png)


# ------------------------------------------------------------------------- config


def test_config_defaults_are_the_reference_renderer():
    c = ProjectionConfig()
    assert (c.image_size, c.depth, c.obj_ratio, c.depth_bias) == (224, 8, 0.8, 0.2)
    assert c.euler == REFERENCE_EULER and c.bias_euler == REFERENCE_BIAS_EULER
    blur = (c.blur_kernel, c.blur_sigma, c.blur_kernel_z, c.blur_sigma_z)
    assert c.pool == 7 and blur == (3, 3.0, 1, 1.0)
    assert c.num_views == 1 and c.mode == "hard" and c.out_size == 224
    assert ProjectionConfig(image_size=64).pool == 3
    assert ProjectionConfig(image_size=64, pool_kernel=5).pool == 5


@pytest.mark.parametrize(
    "bad",
    [{"mode": "fuzzy"}, {"pool_kernel": 4}, {"views": 0}, {"blur_kernel": 2}, {"depth": 2}],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        ProjectionConfig(**bad)


def test_euler_convention_matches_reference():
    # M(a, b, c) = Rx(a) Ry(b) Rz(c) on column vectors; Rz(pi/2) turns +x into +y.
    rz = euler_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    assert torch.allclose(rz @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                          torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12)
    # reference view: up (+y) goes to -x (top image row), tilted 20 degrees towards +z
    rot = DepthProjector(ProjectionConfig()).rotations[0]
    up = rot @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    tilt = math.pi / 9
    expected = torch.tensor([-math.cos(tilt), 0.0, math.sin(tilt)], dtype=torch.float64)
    assert torch.allclose(up, expected, atol=1e-12)
    assert torch.allclose(rot @ rot.T, torch.eye(3, dtype=torch.float64), atol=1e-12)


# ------------------------------------------------------------------------- layout


@pytest.mark.parametrize("mode", ["hard", "soft"])
@pytest.mark.parametrize("views", [1, 3])
def test_shapes_and_range(mode, views):
    x = random_clouds(2, 300)
    img = DepthProjector(ProjectionConfig(image_size=32, mode=mode, views=views))(x)
    assert img.shape == (2 * views, 3, 32, 32) and img.dtype == torch.float32
    assert img.min() >= 0.0 and img.max() <= 1.0 and torch.isfinite(img).all()
    assert torch.equal(img[:, 0], img[:, 1]) and torch.equal(img[:, 0], img[:, 2])
    # every image is normalised: its darkest pixel is 0, its corners background 1
    assert torch.allclose(img.flatten(1).amin(1), torch.zeros(2 * views), atol=1e-6)
    assert (img[:, :, 0, 0] == 1).all()


def test_output_resize_and_float64():
    x = random_clouds(2, 200).double()
    img = project_depth(x, image_size=32, output_size=48)
    assert img.shape == (2, 3, 48, 48) and img.dtype == torch.float64
    assert img.min() >= 0 and img.max() <= 1 and (img[:, :, 0, 0] == 1).all()


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_deterministic(mode):
    x = random_clouds(3, 512, seed=2)
    cfg = ProjectionConfig(image_size=48, mode=mode, views=2)
    a = DepthProjector(cfg)(x)
    b = DepthProjector(cfg)(x.clone())
    assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_batch_independence(mode):
    x = random_clouds(3, 400, seed=3)
    proj = DepthProjector(ProjectionConfig(image_size=40, mode=mode, views=2))
    together = proj(x)
    alone = torch.cat([proj(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)


def test_multi_view_count_order_and_view_zero_is_reference():
    x = random_clouds(3, 400, seed=4)
    multi = DepthProjector(ProjectionConfig(image_size=40, views=4))(x)
    single = DepthProjector(ProjectionConfig(image_size=40))(x)
    assert multi.shape == (12, 3, 40, 40)
    per = multi.view(3, 4, 3, 40, 40)  # sample-major: row b * V + v
    assert torch.allclose(per[:, 0], single, atol=1e-6)
    assert (per[:, 1] - per[:, 0]).abs().amax() > 0.1  # other views really differ
    # views = 4 reproduces PointCLIP V2's first four views; its ten views are available
    rot4 = DepthProjector(ProjectionConfig(views=4)).rotations
    rot_pc = DepthProjector(ProjectionConfig(euler_views=POINTCLIP_V2_VIEWS)).rotations
    assert rot_pc.shape == (10, 3, 3) and torch.allclose(rot4, rot_pc[:4], atol=1e-12)
    ten = DepthProjector(ProjectionConfig(image_size=24, euler_views=POINTCLIP_V2_VIEWS))(x)
    assert ten.shape == (30, 3, 24, 24)


# ------------------------------------------------------------------------- brute force


def brute_force_hard(points: torch.Tensor, cfg: ProjectionConfig) -> torch.Tensor:
    """The reference pipeline spelled out: a loop over points for the scatter-max into the
    full ``depth x S x S`` grid, then ``max_pool3d`` and ``conv3d`` with a normalised
    Gaussian, as PointCLIP V2's ``Grid2Image``."""
    s, depth = cfg.image_size, cfg.depth
    rot = euler_to_matrix(torch.tensor(cfg.bias_euler, dtype=torch.float64)) @ euler_to_matrix(
        torch.tensor(cfg.euler, dtype=torch.float64)
    )
    out = []
    for cloud in points.double():
        p = cloud @ rot.T
        pmax, pmin = p.amax(0), p.amin(0)
        p = (p - (pmax + pmin) / 2) / (pmax - pmin).amax() * 2
        grid = torch.zeros(depth, s, s, dtype=torch.float64)
        for x, y, z in p.tolist():
            u = min(max(math.ceil((x * cfg.obj_ratio + 1) / 2 * s), 1), s - 2)
            v = min(max(math.ceil((y * cfg.obj_ratio + 1) / 2 * s), 1), s - 2)
            d = ((z + 1) / 2 + cfg.depth_bias) / (1 + cfg.depth_bias) * (depth - 2)
            k = math.ceil(d)
            grid[k, u, v] = max(grid[k, u, v].item(), min(max(d, 1.0), depth - 2))
        k = cfg.pool
        g = F.max_pool3d(grid[None, None], (1, k, k), stride=1, padding=(0, k // 2, k // 2))

        def gauss(size, sigma):
            t = torch.arange(size, dtype=torch.float64) - size // 2
            return torch.exp(-(t**2) / (2 * sigma**2))

        gxy, gz = gauss(cfg.blur_kernel, cfg.blur_sigma), gauss(cfg.blur_kernel_z, cfg.blur_sigma_z)
        kern = gz[:, None, None] * gxy[None, :, None] * gxy[None, None, :]
        pad = (cfg.blur_kernel_z // 2, cfg.blur_kernel // 2, cfg.blur_kernel // 2)
        g = F.conv3d(g, (kern / kern.sum())[None, None], padding=pad)
        img = g[0, 0].amax(0)
        out.append(1 - img / img.max())
    return torch.stack(out)


@pytest.mark.parametrize("size,pool,kz", [(24, 5, 1), (32, None, 1), (28, 3, 3)])
def test_hard_mode_equals_brute_force_reference(size, pool, kz):
    x = random_clouds(2, 150, seed=5).double()
    cfg = ProjectionConfig(image_size=size, pool_kernel=pool, blur_kernel_z=kz)
    got = DepthProjector(cfg)(x)[:, 0]
    want = brute_force_hard(x, cfg)
    assert torch.allclose(got, want, atol=1e-9)


# ------------------------------------------------------------------------- known shapes


@pytest.mark.parametrize("undo_view", [False, True])
def test_flat_square_facing_camera_is_a_uniform_filled_square(undo_view):
    s = 64
    square = flat_square(64, torch.float64)
    if undo_view:  # reference view: pre-rotate so that the camera sees the square face on
        cfg = ProjectionConfig(image_size=s)
        rot = DepthProjector(cfg).rotations[0]
        square = square @ rot  # p_world = R^T p_cam, as row vectors
    else:
        cfg = ProjectionConfig(image_size=s, **IDENTITY)
    img = DepthProjector(cfg)(square)[0, 0]
    # x, y in [-0.8, 0.8] -> cells ceil(6.4) .. ceil(57.6) = 7 .. 58; pool 3 and blur 3
    # reach 2 more pixels; inside, every 3x3 blur window sees the same depth.
    assert cfg.pool == 3
    inside = img[8:58, 8:58]
    assert inside.abs().max() < 1e-6  # uniform and nearest (dark)
    outside = torch.ones(s, s, dtype=torch.bool)
    outside[5:61, 5:61] = False
    assert (img[outside] == 1).all()  # white background
    assert (img[5:61, 5:61] < 1).all()


def test_soft_flat_square_looks_like_hard():
    s = 64
    cfg = ProjectionConfig(image_size=s, mode="soft", **IDENTITY)
    img = DepthProjector(cfg)(flat_square(64))[0, 0]
    assert img[9:57, 9:57].max() < 0.02
    reach = cfg.radius + cfg.blur_kernel // 2
    assert (img[: 7 - reach] == 1).all() and (img[58 + reach + 1 :] == 1).all()
    hard = DepthProjector(ProjectionConfig(image_size=s, **IDENTITY))(flat_square(64))[0, 0]
    assert (hard - img).abs().mean() < 0.03


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_sphere_is_a_disc_darkest_at_its_centre(mode):
    # Near surfaces are dark: the centre of the disc is the nearest point of the sphere.
    img = DepthProjector(ProjectionConfig(image_size=64, mode=mode))(fibonacci_sphere(4096))[0, 0]
    centre = img[30:34, 30:34].mean()
    mid = img[32, 32 - 12]  # half the disc radius (0.8 * 32 = 25.6 px)
    rim = img[32, 32 - 23]
    assert centre < 0.05 and centre < mid < rim < 1
    assert img[0, 0] == 1 and img[32, 2] == 1  # background outside the disc
    # radial symmetry (up to sampling): left/right and top/bottom profiles agree
    assert (img[32, 8:32] - img[32, 32:56].flip(0)).abs().mean() < 0.1
    assert (img[8:32, 32] - img[32:56, 32].flip(0)).abs().mean() < 0.1


def test_soft_and_hard_look_alike_on_a_sphere():
    pts = fibonacci_sphere(2048)
    hard = project_depth(pts, image_size=64)
    soft = project_depth(pts, image_size=64, mode="soft")
    assert (hard - soft).abs().mean() < 0.05


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_identical_points_give_no_nan(mode):
    x = torch.full((2, 50, 3), 0.3, requires_grad=True)
    img = DepthProjector(ProjectionConfig(image_size=32, mode=mode))(x)
    assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    img.sum().backward()
    assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------- gradients


def test_hard_mode_gradients_exist_but_are_sparse():
    x = random_clouds(2, 512, seed=6).requires_grad_(True)
    img = DepthProjector(ProjectionConfig(image_size=48))(x)
    (img * torch.rand(img.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.abs().sum(-1) > 0).any()


@pytest.mark.parametrize("size", [32, 64])
def test_soft_mode_gradients_reach_most_points(size):
    x = random_clouds(2, 512, seed=7).requires_grad_(True)
    img = DepthProjector(ProjectionConfig(image_size=size, mode="soft", views=2))(x)
    (img * torch.rand(img.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    assert torch.isfinite(x.grad).all()
    moved = (x.grad.abs().sum(-1) > 0).float().mean()
    assert moved > 0.9
    # and they point somewhere useful: a finite-difference check on one direction
    proj = DepthProjector(ProjectionConfig(image_size=size, mode="soft"))
    x0 = random_clouds(1, 256, seed=8).double()
    gen = torch.Generator().manual_seed(1)
    w = torch.rand(1, 3, size, size, generator=gen, dtype=torch.float64)
    xg = x0.clone().requires_grad_(True)
    (proj(xg) * w).sum().backward()
    direction = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    eps = 1e-6
    up, down = (proj(x0 + eps * direction) * w).sum(), (proj(x0 - eps * direction) * w).sum()
    fd = (up - down) / (2 * eps)
    assert torch.allclose(fd, (xg.grad * direction).sum(), rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------------- real shape


@pytest.mark.skipif(
    not (SHARED_DATA / "airplane-1024.npy").exists(), reason="shared sample data absent"
)
@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_real_airplane_png(mode, tmp_path):
    pts = torch.from_numpy(np.load(SHARED_DATA / "airplane-1024.npy")).float()[None]
    assert pts.shape == (1, 1024, 3)
    img = DepthProjector(ProjectionConfig(image_size=112, mode=mode, views=2))(pts)
    assert img.shape == (2, 3, 112, 112)
    fg = (img[:, 0] < 0.95).float().mean(dim=(1, 2))
    assert ((fg > 0.05) & (fg < 0.6)).all()  # an object, not a blank or a blob
    gray = (img[:, 0].permute(1, 0, 2).reshape(112, -1).numpy() * 255).round()
    out = tmp_path / f"airplane_{mode}.png"
    write_png(out, gray)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 500
