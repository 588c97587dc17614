"""SynthShapes: the primitives' geometry, the generator's determinism and balance, the cache."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.core.data import DatasetError, load_dataset
from benchmark.core.data import primitives as prim
from benchmark.core.data.synthshapes import CLASSES, generate

RNG = np.random.default_rng(0)

# one solid of each kind, [1, PARAM_DIM] rows, with its exact volume and area
SOLIDS = {
    "box": (prim.BOX, [0.1, -0.2, 0.3, 0.5, 0.2, 0.3], 8 * 0.5 * 0.2 * 0.3, 8 * (0.1 + 0.15 + 0.06)),
    "cylinder-x": (prim.CYLINDER, [0, 0, 0, 0.3, 0.6, 0], np.pi * 0.09 * 1.2, 2 * np.pi * 0.3 * 1.2 + 2 * np.pi * 0.09),
    "cylinder-y": (prim.CYLINDER, [0.2, 0, 0, 0.25, 0.4, 1], np.pi * 0.0625 * 0.8, None),
    "ellipsoid": (prim.ELLIPSOID, [0, 0.1, 0, 0.6, 0.3, 0.4], 4 / 3 * np.pi * 0.6 * 0.3 * 0.4, None),
    "torus-z": (prim.TORUS, [0, 0, 0, 0.5, 0.15, 2], 2 * np.pi**2 * 0.5 * 0.15**2, 4 * np.pi**2 * 0.5 * 0.15),
    # a hollow tube of revolution: outer radius 0.5, inner 0.3, height 0.8
    "revolved-tube": (
        prim.REVOLVED,
        [0, -0.4, 0, 0.8, 1 / 3, 2 / 3, 0.5, 0.5, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3],
        np.pi * (0.25 - 0.09) * 0.8,
        2 * np.pi * (0.5 + 0.3) * 0.8 + 2 * np.pi * (0.25 - 0.09),
    ),
    # a solid cone: radius 0.6 at the bottom, 0 at the top, height 0.9
    "revolved-cone": (
        prim.REVOLVED,
        [0, 0, 0, 0.9, 1 / 3, 2 / 3, 0.6, 0.4, 0.2, 0.0, 0, 0, 0, 0],
        np.pi * 0.36 * 0.9 / 3,
        np.pi * 0.6 * np.hypot(0.6, 0.9) + np.pi * 0.36,
    ),
}


def _row(values: list[float]) -> np.ndarray:
    out = np.zeros((1, prim.PARAM_DIM))
    out[0, : len(values)] = values
    return out


@pytest.mark.parametrize("name", SOLIDS)
def test_inside_test_matches_exact_volume(name: str) -> None:
    kind, values, volume, _ = SOLIDS[name]
    q = RNG.uniform(-1, 1, (1, 200_000, 3))
    estimate = prim.contains(kind, _row(values), q).mean() * 8.0
    assert estimate == pytest.approx(volume, rel=0.03)


def _inside_by_definition(kind: int, v: np.ndarray, q: np.ndarray) -> bool:
    """One point, plain Python, straight from the layout table of ``primitives`` (closed solids)."""
    d = [float(q[i] - v[i]) for i in range(3)]
    if kind == prim.BOX:
        return all(abs(d[i]) <= v[3 + i] for i in range(3))
    if kind in (prim.CYLINDER, prim.TORUS):
        axis = int(v[5])
        radial = math.hypot(*(d[i] for i in range(3) if i != axis))
        if kind == prim.CYLINDER:
            return abs(d[axis]) <= v[4] and radial <= v[3]
        return (radial - v[3]) ** 2 + d[axis] ** 2 <= v[4] ** 2
    if kind == prim.ELLIPSOID:
        return sum((d[i] / v[3 + i]) ** 2 for i in range(3)) <= 1.0
    if kind == prim.REVOLVED:  # knots at y0 + height * (0, t1, t2, 1), radii linear in between
        knots = [v[1] + v[3] * t for t in (0.0, v[4], v[5], 1.0)]
        y = float(q[1])
        if not knots[0] <= y <= knots[3]:
            return False
        seg = next(i for i in range(3) if y <= knots[i + 1])
        f = (y - knots[seg]) / (knots[seg + 1] - knots[seg])
        outer = v[6 + seg] + f * (v[7 + seg] - v[6 + seg])
        inner = v[10 + seg] + f * (v[11 + seg] - v[10 + seg])
        radial = math.hypot(q[0] - v[0], q[2] - v[2])
        return radial <= outer and (inner <= 0 or radial >= inner)
    raise ValueError(kind)


BRUTE = {**SOLIDS, "cylinder-z": (prim.CYLINDER, [0, 0.1, -0.2, 0.2, 0.5, 2], None, None),
         "torus-x": (prim.TORUS, [0.1, 0, 0, 0.4, 0.1, 0], None, None),
         "torus-y": (prim.TORUS, [0, 0.2, 0, 0.3, 0.15, 1], None, None)}


@pytest.mark.parametrize("name", BRUTE)
def test_inside_test_agrees_point_by_point_with_the_definition(name: str) -> None:
    kind, values, _, _ = BRUTE[name]
    q = np.random.default_rng(7).uniform(-1, 1, (1, 3000, 3))
    got = prim.contains(kind, _row(values), q)[0]
    want = np.array([_inside_by_definition(kind, _row(values)[0], p) for p in q[0]])
    assert 10 < want.sum() < 2990  # both sides are tested
    np.testing.assert_array_equal(got, want)


def test_shape_bank_is_the_union_of_its_parts_in_the_cloud_frame() -> None:
    _, _, shapes, _ = generate(33, 64, seed=0)
    q = np.random.default_rng(8).uniform(-1.1, 1.1, (33, 150, 3))
    canon = shapes.to_canonical(q)
    want = np.array([[any(_inside_by_definition(int(kind), shapes.part_params[m, j], canon[m, i])
                          for j, kind in enumerate(shapes.part_type[m]) if kind >= 0)
                      for i in range(q.shape[1])] for m in range(33)])
    assert 0.02 < want.mean() < 0.5
    np.testing.assert_array_equal(shapes.contains(q), want)


@pytest.mark.parametrize("name", [n for n, s in SOLIDS.items() if s[3] is not None])
def test_area_matches_closed_form(name: str) -> None:
    kind, values, _, area = SOLIDS[name]
    assert prim.area(kind, _row(values))[0] == pytest.approx(area, rel=1e-6)


@pytest.mark.parametrize("name", SOLIDS)
def test_samples_lie_on_the_surface(name: str) -> None:
    kind, values, _, _ = SOLIDS[name]
    pts, accept = prim.sample(kind, _row(values), np.random.default_rng(1), 4000)
    assert pts.shape == (1, 4000, 3) and accept.shape == (1, 4000)
    assert ((accept >= 0) & (accept <= 1)).all()
    assert prim.contains(kind, _row(values), pts, margin=-1e-6).all()  # within the solid (closed)
    assert not prim.contains(kind, _row(values), pts, margin=1e-3).any()  # but not deep inside


def test_cylinder_samples_are_area_uniform_between_side_and_caps() -> None:
    r, half = 0.3, 0.6
    pts, _ = prim.sample(prim.CYLINDER, _row([0, 0, 0, r, half, 1]), np.random.default_rng(2), 100_000)
    on_caps = np.isclose(np.abs(pts[0, :, 1]), half).mean()
    assert on_caps == pytest.approx(2 * np.pi * r**2 / (2 * np.pi * r * 2 * half + 2 * np.pi * r**2), abs=0.01)


def test_torus_acceptance_makes_samples_area_uniform() -> None:
    big, small = 0.5, 0.2
    pts, accept = prim.sample(prim.TORUS, _row([0, 0, 0, big, small, 1]), np.random.default_rng(3), 200_000)
    kept = pts[0][np.random.default_rng(4).random(200_000) < accept[0]]
    outer = (np.hypot(kept[:, 0], kept[:, 2]) > big).mean()
    assert outer == pytest.approx((np.pi * big + 2 * small) / (2 * np.pi * big), abs=0.01)


def test_frustum_samples_follow_radius_weighted_density() -> None:
    # cone side only (no base): the fraction of side points below mid-height is 3/4
    values = [0, 0, 0, 1.0, 1 / 3, 2 / 3, 0.6, 0.4, 0.2, 0.0]
    pts, _ = prim.sample(prim.REVOLVED, _row(values), np.random.default_rng(5), 200_000)
    side = pts[0][pts[0, :, 1] > 1e-9]
    assert (side[:, 1] < 0.5).mean() == pytest.approx(0.75, abs=0.01)


def test_generation_is_deterministic_for_a_seed() -> None:
    a = generate(66, 128, split="train", seed=3)
    b = generate(66, 128, split="train", seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2].part_params, b[2].part_params)


def test_seeds_and_splits_give_different_clouds() -> None:
    base = generate(33, 64, split="train", seed=0)[0]
    assert not np.allclose(base, generate(33, 64, split="train", seed=1)[0])
    assert not np.allclose(base, generate(33, 64, split="test", seed=0)[0])


def test_classes_are_balanced_with_remainder_to_the_first() -> None:
    _, labels, _, names = generate(len(CLASSES) * 3 + 2, 32, seed=0)
    counts = np.bincount(labels, minlength=len(names))
    assert counts[:2].tolist() == [4, 4] and (counts[2:] == 3).all()


def test_clouds_are_unit_sphere_normalised() -> None:
    points, _, _, _ = generate(40, 256, seed=0)
    assert points.dtype == np.float32 and points.shape == (40, 256, 3)
    np.testing.assert_allclose(np.linalg.norm(points, axis=-1).max(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(points.mean(1), 0.0, atol=1e-5)


def test_rotation_is_about_the_up_axis_only() -> None:
    upright = generate(33, 256, seed=0, rotate=False)[0]
    turned = generate(33, 256, seed=0, rotate=True)[0]
    np.testing.assert_allclose(upright[..., 1], turned[..., 1], atol=1e-6)  # heights unchanged
    np.testing.assert_allclose(np.hypot(upright[..., 0], upright[..., 2]), np.hypot(turned[..., 0], turned[..., 2]),
                               atol=1e-5)


def test_surface_points_are_on_the_union_boundary() -> None:
    points, _, shapes, _ = generate(33, 256, seed=0)
    assert not shapes.contains(points, margin=2e-3).any()  # no point buried inside the object


def test_shape_bank_answers_inside_queries_in_the_cloud_frame() -> None:
    points, _, shapes, _ = generate(33, 512, seed=0)
    centroid_dirs = -points / np.linalg.norm(points, axis=-1, keepdims=True)
    # a small step from each surface point is inside on one side or the other: check that
    # insideness is a property of the geometry (step inwards along -x vs +x differ somewhere)
    inward = shapes.contains(points + 0.01 * centroid_dirs)
    outward = shapes.contains(points - 0.01 * centroid_dirs)
    assert inward.mean() > outward.mean()
    far = np.full((33, 10, 3), 3.0)
    assert not shapes.contains(far).any()


def test_shape_bank_subset_follows_the_clouds() -> None:
    points, _, shapes, _ = generate(33, 128, seed=0)
    idx = np.array([5, 1, 7])
    sub = shapes.subset(idx)
    np.testing.assert_array_equal(sub.contains(points[idx]), shapes.contains(points)[idx])


def test_unknown_class_names_the_close_match() -> None:
    with pytest.raises(DatasetError, match="did you mean 'chair'"):
        generate(4, 32, classes=["chiar", "table"])


def test_loader_caches_and_reloads_identical_data(tmp_path) -> None:
    opts = {"train_size": 40, "test_size": 20, "classes": ["chair", "table", "cup", "lamp"]}
    first = load_dataset("synthshapes", "train", num_points=64, cache_dir=tmp_path, options=opts)
    files = list((tmp_path / "datasets").glob("synthshapes-*.npz"))
    assert len(files) == 1
    again = load_dataset("synthshapes", "train", num_points=64, cache_dir=tmp_path, options=opts)
    assert again.fingerprint == first.fingerprint
    assert again.class_names == ("chair", "table", "cup", "lamp")
    inside = again.extras["shapes"].contains(again.points[:2] * 0.01, indices=[0, 1])
    assert inside.shape == (2, 64)


def test_loader_fps_sampling_spreads_points() -> None:
    opts = {"train_size": 33, "test_size": 33}
    fps = load_dataset("synthshapes", "test", num_points=128, sampling="fps", options=opts)
    first = load_dataset("synthshapes", "test", num_points=128, sampling="first", options=opts)
    # farthest point sampling leaves no two points closer than random sampling does
    def min_gap(p: np.ndarray) -> float:
        d = np.linalg.norm(p[:, :, None] - p[:, None], axis=-1) + np.eye(p.shape[1]) * 9
        return float(d.min(axis=(1, 2)).mean())

    assert min_gap(fps.points) > min_gap(first.points)


def test_loader_rejects_unknown_options() -> None:
    from benchmark.core.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="train_size"):
        load_dataset("synthshapes", "train", options={"train_sise": 10})
