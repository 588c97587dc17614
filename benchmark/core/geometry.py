"""Geometry ops on batched point clouds, in pure torch: the one import path callers use.

Conventions (PROTOCOL.md section 1):

- a point cloud is ``[B, N, 3]`` float, channels last, batch first; every op is vectorised
  over the batch;
- every distance is a **squared** Euclidean distance (units: squared cloud units) unless
  the name says otherwise;
- neighbour searches pick indices without autograd, in chunks of query points so that one
  ``[B, chunk, N]`` distance block stays bounded, then recompute the returned distances
  exactly from the gathered points, so gradients flow to both inputs and memory stays
  ``O(B * Q * k + B * chunk * N)``.

The ops live in one module per concept and are re-exported here unchanged:

- :mod:`benchmark.core.points`: input checks, ``pairwise_sq_dists``, ``index_points``;
- :mod:`benchmark.core.neighbours`: ``knn``, ``knn_indices``, ``nearest_neighbor``,
  ``ReferenceNeighbours`` and the set distances ``chamfer_distance``, ``hausdorff_distance``
  (the block bound ``_MAX_BLOCK_ELEMENTS`` is read there);
- :mod:`benchmark.core.transforms`: ``farthest_point_sample``, ``normalize_unit_sphere``,
  ``random_rotation``, ``rotate``, ``estimate_normals``.

Floor 0: imports torch and the standard library only.
"""
from __future__ import annotations

from benchmark.core.neighbours import (  # noqa: F401  (private names re-exported for old callers)
    _MAX_BLOCK_ELEMENTS,
    _MODES,
    ReferenceNeighbours,
    _auto_chunk,
    _check_mode,
    _directed,
    _neighbour_indices,
    chamfer_distance,
    hausdorff_distance,
    knn,
    knn_indices,
    nearest_neighbor,
)
from benchmark.core.points import _check_cloud, _check_same_batch, index_points, pairwise_sq_dists  # noqa: F401
from benchmark.core.transforms import (  # noqa: F401
    _AXES,
    _EIGH_CHUNK,
    _draw,
    estimate_normals,
    farthest_point_sample,
    normalize_unit_sphere,
    random_rotation,
    rotate,
)

__all__ = [
    "ReferenceNeighbours",
    "chamfer_distance",
    "estimate_normals",
    "farthest_point_sample",
    "hausdorff_distance",
    "index_points",
    "knn",
    "knn_indices",
    "nearest_neighbor",
    "normalize_unit_sphere",
    "pairwise_sq_dists",
    "random_rotation",
    "rotate",
]
