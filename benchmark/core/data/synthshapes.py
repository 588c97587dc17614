"""SynthShapes: the embedded dataset — seeded procedural objects named like ModelNet40 classes.

Each object is a union of solid primitives (``primitives.py``) with randomised
proportions and optional parts (a chair may have armrests, a cup a handle), sampled
area-uniformly on the surface of the union (points of one part buried inside another
are discarded), normalised to the unit sphere, and rotated about the up axis (y).
The parametric description is kept (``ShapeBank``), so every cloud can also answer
"is this point inside the object?" exactly — what IF-Defense's occupancy network
trains on.

Generation is vectorised over the shapes of a class and cached on disk; 1,000 clouds of
1,024 points take about 3 s on one CPU core (measured here).
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.core.cache import cached_arrays, entry_path
from benchmark.core.config import config_hash
from benchmark.core.registry import DATASETS, close_matches_hint

from . import primitives as prim
from .base import DatasetError, PointCloudDataset, select_points
from .synthshapes_recipes import CLASSES, Part

__all__ = ["CLASSES", "GENERATOR_VERSION", "ShapeBank", "generate", "synthshapes"]

#: Bump when the generator's output changes, so cached datasets are regenerated.
GENERATOR_VERSION = 1
OVERSAMPLE = 3  # candidate surface points per kept point (room for buried and rejected ones)

# ---------------------------------------------------------------------------------------------
# the parametric description that survives sampling
# ---------------------------------------------------------------------------------------------
@dataclass
class ShapeBank:
    """The solids behind every cloud: ``part_type [M, P]`` (-1 = no part), ``part_params [M, P, 16]``,
    and the normalisation that maps the canonical frame to the cloud's frame:
    ``x = rotate_y(angle) @ ((x_canonical - centre) / scale)``."""

    part_type: np.ndarray
    part_params: np.ndarray
    centre: np.ndarray  # [M, 3]
    scale: np.ndarray  # [M]
    angle: np.ndarray  # [M], radians about +y

    def __len__(self) -> int:
        return int(self.part_type.shape[0])

    def subset(self, idx: np.ndarray) -> ShapeBank:
        return ShapeBank(*(a[idx] for a in self.to_arrays().values()))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "part_type": self.part_type,
            "part_params": self.part_params,
            "centre": self.centre,
            "scale": self.scale,
            "angle": self.angle,
        }

    def to_canonical(self, points: np.ndarray) -> np.ndarray:
        """Cloud-frame points ``[M, Q, 3]`` -> each shape's canonical frame."""
        c, s = np.cos(self.angle)[:, None], np.sin(self.angle)[:, None]
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        unrotated = np.stack([c * x - s * z, y, s * x + c * z], -1)  # inverse rotation about y
        return unrotated * self.scale[:, None, None] + self.centre[:, None, :]

    def contains(self, points: np.ndarray, margin: float = 0.0, indices: np.ndarray | None = None) -> np.ndarray:
        """``[M, Q]`` bool: whether each cloud-frame point lies inside its shape (union of parts).

        ``points [M, Q, 3]`` belong to all shapes, or to the shapes at ``indices [M]`` when given.
        ``margin > 0`` asks for points deeper inside than ``margin``.
        """
        if indices is not None:
            return self.subset(np.asarray(indices)).contains(points, margin)
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 3 or points.shape[0] != len(self) or points.shape[-1] != 3:
            raise ValueError(f"points must be [{len(self)}, Q, 3], got {list(points.shape)}")
        canon = self.to_canonical(points)
        inside = np.zeros(points.shape[:2], dtype=bool)
        for j in range(self.part_type.shape[1]):  # loop over part slots and types, not points
            for kind in np.unique(self.part_type[:, j]):
                if kind < 0:
                    continue
                rows = self.part_type[:, j] == kind
                inside[rows] |= prim.contains(int(kind), self.part_params[rows, j], canon[rows], margin)
        return inside


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------
def _class_seed(seed: int, split: str, name: str) -> list[int]:
    return [seed, 0 if split == "train" else 1, zlib.crc32(name.encode())]


def _generate_class(
    recipe: Callable[[np.random.Generator, int], list[Part]],
    rng: np.random.Generator,
    m: int,
    num_points: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``m`` clouds of one class in the canonical frame: points ``[m, num_points, 3]``, types, params."""
    parts = recipe(rng, m)
    k = num_points * OVERSAMPLE
    kinds = np.array([kind for kind, _, _ in parts])
    params = np.stack([p for _, p, _ in parts], 1)  # [m, P, 16]
    present = np.stack([pr for _, _, pr in parts], 1)  # [m, P]
    areas = np.stack([prim.area(kind, params[:, j]) for j, kind in enumerate(kinds)], 1) * present
    choice = prim.choose_weighted(areas, rng.random((m, k)))  # which part each candidate lies on
    cand = np.zeros((m, k, 3))
    accept = np.zeros((m, k))
    for j, kind in enumerate(kinds):  # loop over the class's parts, vectorised over shapes/points
        pts, acc = prim.sample(int(kind), params[:, j], rng, k)
        on = choice == j
        cand[on] = pts[on]
        accept[on] = acc[on]
    buried = np.zeros((m, k), dtype=bool)
    for j, kind in enumerate(kinds):
        inside = prim.contains(int(kind), params[:, j], cand, margin=1e-4) & present[:, j, None]
        buried |= inside & (choice != j)
    valid = (rng.random((m, k)) < accept) & ~buried
    keys = rng.random((m, k)) + 2.0 * ~valid  # valid candidates first, in random order
    keep = np.argpartition(keys, num_points - 1, axis=1)[:, :num_points]
    points = np.take_along_axis(cand, keep[..., None], axis=1)
    types = np.where(present, kinds[None, :], -1)
    return points, types, params


def generate(
    size: int,
    num_points: int,
    *,
    split: str = "train",
    seed: int = 0,
    classes: Sequence[str] | None = None,
    jitter: float = 0.0,
    rotate: bool = True,
) -> tuple[np.ndarray, np.ndarray, ShapeBank, tuple[str, ...]]:
    """Generate ``size`` clouds, balanced over ``classes`` (remainder to the first classes).

    Returns ``(points [size, num_points, 3] float32 unit-sphere, labels [size] int64, shapes,
    class_names)``, shuffled by a seeded permutation. The same arguments give identical arrays.
    """
    names = tuple(classes) if classes else tuple(CLASSES)
    for name in names:
        if name not in CLASSES:
            raise DatasetError(
                f"synthshapes has no class '{name}'{close_matches_hint(name, CLASSES) or '.'} "
                f"Classes: {', '.join(CLASSES)}"
            )
    if len(set(names)) != len(names):
        raise DatasetError(f"synthshapes classes repeat a name: {list(names)}")
    if size < len(names):
        raise DatasetError(f"synthshapes size {size} is smaller than its {len(names)} classes")
    counts = [size // len(names) + (1 if i < size % len(names) else 0) for i in range(len(names))]
    max_parts = max(len(CLASSES[n](np.random.default_rng(0), 1)) for n in names)
    all_points, all_types, all_params, all_labels = [], [], [], []
    for label, (name, count) in enumerate(zip(names, counts)):
        rng = np.random.default_rng(_class_seed(seed, split, name))
        pts, types, params = _generate_class(CLASSES[name], rng, count, num_points)
        pad = max_parts - types.shape[1]
        all_points.append(pts)
        all_types.append(np.pad(types, ((0, 0), (0, pad)), constant_values=-1))
        all_params.append(np.pad(params, ((0, 0), (0, pad), (0, 0))))
        all_labels.append(np.full(count, label, dtype=np.int64))
    points = np.concatenate(all_points)
    labels = np.concatenate(all_labels)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, 7])
    centre = points.mean(axis=1)
    centred = points - centre[:, None]
    scale = np.linalg.norm(centred, axis=-1).max(axis=1)
    points = centred / scale[:, None, None]
    angle = rng.uniform(0, 2 * np.pi, len(points)) * (1.0 if rotate else 0.0)  # same draws either way
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    points = np.stack([c * x + s * z, y, -s * x + c * z], -1)  # rotation about +y
    if jitter > 0:
        points = points + np.clip(rng.normal(0, jitter, points.shape), -5 * jitter, 5 * jitter)
    shapes = ShapeBank(
        part_type=np.concatenate(all_types).astype(np.int8),
        part_params=np.concatenate(all_params).astype(np.float32),
        centre=centre.astype(np.float32),
        scale=scale.astype(np.float32),
        angle=angle.astype(np.float32),
    )
    order = rng.permutation(len(points))
    return points[order].astype(np.float32), labels[order], shapes.subset(order), names


@DATASETS.register("synthshapes")
def synthshapes(
    split: str,
    *,
    root: Path | None = None,
    num_points: int = 1024,
    sampling: str = "first",
    normalize: bool = True,
    seed: int = 0,
    cache_dir: Path | None = None,
    train_size: int = 2048,
    test_size: int = 256,
    classes: Sequence[str] | None = None,
    jitter: float = 0.0,
    rotate: bool = True,
) -> PointCloudDataset:
    """Embedded procedural objects (33 ModelNet40-named classes), generated from the seed; no files needed.

    ``train_size``/``test_size`` clouds, class-balanced; the two splits use independent
    random streams of ``seed``. ``sampling="fps"`` draws 4x the points and keeps a farthest
    point subset; ``normalize`` is always applied (clouds are generated unit-sphere).
    ``root`` is ignored. Cached under ``<cache_dir>/datasets`` when ``cache_dir`` is given.
    """
    size = train_size if split == "train" else test_size
    spec = {
        "generator": GENERATOR_VERSION,
        "split": split,
        "size": size,
        "num_points": num_points,
        "sampling": sampling,
        "seed": seed,
        "classes": list(classes) if classes else None,
        "jitter": jitter,
        "rotate": rotate,
    }

    def build() -> dict[str, np.ndarray]:
        raw_points = num_points * (4 if sampling == "fps" else 1)
        points, labels, shapes, names = generate(
            size, raw_points, split=split, seed=seed, classes=classes, jitter=jitter, rotate=rotate
        )
        points, _ = select_points(points, num_points, sampling, seed=seed)
        return {"points": points, "labels": labels, "class_names": np.array(names), **shapes.to_arrays()}

    if cache_dir is not None:
        path = entry_path(cache_dir, "datasets", f"synthshapes-{config_hash(spec)}", ".npz")
        arrays, _ = cached_arrays(path, build, meta=spec)
    else:
        arrays = build()
    bank = ShapeBank(**{k: arrays[k] for k in ("part_type", "part_params", "centre", "scale", "angle")})
    return PointCloudDataset(
        name="synthshapes",
        split=split,
        points=arrays["points"],
        labels=arrays["labels"],
        class_names=tuple(str(c) for c in arrays["class_names"]),
        extras={"shapes": bank},
    )
