"""What is computed from each cloud alone: farthest point sampling, unit-sphere
normalisation, random rotations, PCA normals.

Conventions are those of :mod:`benchmark.core.geometry`. Floor 0: imports torch,
``benchmark.core.points`` and ``benchmark.core.neighbours`` only.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from benchmark.core.neighbours import knn
from benchmark.core.points import _check_cloud, _check_same_batch, index_points

__all__ = [
    "estimate_normals",
    "farthest_point_sample",
    "normalize_unit_sphere",
    "random_rotation",
    "rotate",
]

#: 3x3 matrices per batched ``eigh`` call (estimate_normals).
_EIGH_CHUNK = 32768

_AXES = ("x", "y", "z")


# --------------------------------------------------------------------------- sampling


@torch.no_grad()
def farthest_point_sample(
    x: Tensor, m: int, *, start: str = "first", generator: torch.Generator | None = None
) -> Tensor:
    """Iterative farthest point sampling.

    Each new centre is the point with the largest squared distance to the centres chosen
    so far (first index on ties). Already chosen points are never chosen again, so the
    ``m`` indices of a cloud are distinct even when it holds duplicate points.

    Args:
        x: ``[B, N, 3]`` float.
        m: centres per cloud, ``0 <= m <= N``.
        start: ``"first"`` = the first centre is index 0; ``"random"`` = a uniformly
            random index per cloud, drawn from ``generator``.
        generator: torch.Generator for ``start="random"`` (its device is used for the draw).

    Returns:
        ``[B, m]`` long indices into ``x``, in selection order. Not differentiable.
    """
    _check_cloud("x", x)
    batch, n, _ = x.shape
    if not isinstance(m, int) or m < 0 or m > n:
        raise ValueError(f"m must be an int in [0, N = {n}] (points of x [B, N, 3]); got m={m}")
    if start == "first":
        farthest = torch.zeros(batch, dtype=torch.long, device=x.device)
    elif start == "random":
        device = generator.device if generator is not None else x.device
        farthest = torch.randint(0, n, (batch,), generator=generator, device=device).to(x.device)
    else:
        raise ValueError(f"unknown start {start!r}; expected 'first' or 'random'")
    min_dist = torch.full((batch, n), math.inf, dtype=x.dtype, device=x.device)
    # coordinate planes [3, B * N] and two reused buffers: each step reads the cloud once and
    # allocates nothing (the [B, N, 3] difference tensor made FPS on 10,000-point files memory-bound);
    # a centre's coordinates and the "chosen" mark: one index_select / index_fill_ at the flat row
    # cloud * N + index (cheaper per step than advanced indexing over [B] rows)
    planes = x.detach().permute(2, 0, 1).reshape(3, batch * n).contiguous()
    p0, p1, p2 = planes.view(3, batch, n)
    offsets = torch.arange(batch, device=x.device) * n
    flat_min = min_dist.view(-1)
    dist = torch.empty_like(min_dist)
    term = torch.empty_like(min_dist)
    chosen = []
    for _ in range(m):
        chosen.append(farthest)
        flat = farthest + offsets
        centre = planes.index_select(1, flat).unsqueeze(-1)  # [3, B, 1]
        # (``addcmul_`` for the squared terms is ~12% faster but rounds differently on some clouds:
        # another centre at step 596 of one 16 x 4,096 -> 1,024 batch; the indices must not change)
        torch.sub(p0, centre[0], out=dist).square_()
        dist.add_(torch.sub(p1, centre[1], out=term).square_())
        dist.add_(torch.sub(p2, centre[2], out=term).square_())
        torch.minimum(min_dist, dist, out=min_dist)
        flat_min.index_fill_(0, flat, -1.0)  # chosen: never the farthest again
        farthest = min_dist.max(dim=-1).indices  # as argmax (first maximum), 2.5x faster on the CPU
    if not chosen:
        return torch.empty(batch, 0, dtype=torch.long, device=x.device)
    return torch.stack(chosen, dim=1)


# --------------------------------------------------------------------------- transforms


def normalize_unit_sphere(
    x: Tensor, *, return_params: bool = False
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Centre each cloud on its centroid and scale it into the unit sphere.

    Args:
        x: ``[B, N, 3]`` float.
        return_params: also return the centre and scale.

    Returns:
        ``y`` ``[B, N, 3]`` with centroid 0 and max point norm 1 (a cloud of zero radius is
        only centred); with ``return_params``, ``(y, centre [B, 1, 3], scale [B, 1, 1])``
        such that ``x = y * scale + centre``.
    """
    _check_cloud("x", x)
    centre = x.mean(dim=1, keepdim=True)
    y = x - centre
    scale = y.norm(dim=-1).amax(dim=1).reshape(-1, 1, 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    y = y / scale
    return (y, centre, scale) if return_params else y


def _draw(kind: str, shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """float64 uniform [0, 1) (``kind="rand"``) or standard normal draws on the generator's device."""
    where = generator.device if generator is not None else (device if device is not None else "cpu")
    fn = torch.rand if kind == "rand" else torch.randn
    return fn(shape, generator=generator, device=where, dtype=torch.float64)


def random_rotation(
    batch: int,
    *,
    axis: str | None = "y",
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Random rotation matrices.

    Args:
        batch: number of matrices B.
        axis: ``"x"``, ``"y"`` or ``"z"`` = a uniform angle in [0, 2 pi) about that axis
            (``"y"`` is the up axis in this project); None = uniform over SO(3) (QR of a
            Gaussian matrix with the sign fix, then det +1).
        generator: torch.Generator for the draws; they are made on its device.
        device: device of the result (default: the generator's, else CPU).
        dtype: dtype of the result.

    Returns:
        ``[B, 3, 3]`` orthonormal, det +1; apply with :func:`rotate`.
    """
    if not isinstance(batch, int) or batch < 0:
        raise ValueError(f"batch must be a non-negative int; got {batch!r}")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    if axis is None:
        g = _draw("randn", (batch, 3, 3), generator, device)
        q, r = torch.linalg.qr(g)
        sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
        q = q * torch.where(sign == 0, torch.ones_like(sign), sign).unsqueeze(-2)
        flip = torch.linalg.det(q) < 0  # reflect one column: O(3) Haar -> SO(3) Haar
        q[..., 0] = torch.where(flip.unsqueeze(-1), -q[..., 0], q[..., 0])
        return q.to(device=device, dtype=dtype)
    if axis not in _AXES:
        raise ValueError(f"unknown axis {axis!r}; expected 'x', 'y', 'z' or None (uniform SO(3))")
    theta = _draw("rand", (batch,), generator, device) * (2.0 * math.pi)
    c, s = torch.cos(theta), torch.sin(theta)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    if axis == "x":
        rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == "y":
        rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    else:
        rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    rot = torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)
    return rot.to(device=device, dtype=dtype)


def rotate(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate each cloud by its matrix; points are row vectors: ``x @ R^T``.

    Args:
        x: ``[B, N, 3]`` float.
        rotation: ``[B, 3, 3]``.

    Returns:
        ``[B, N, 3]``, differentiable w.r.t. both inputs.
    """
    _check_cloud("x", x)
    if not isinstance(rotation, Tensor) or rotation.dim() != 3 or rotation.shape[1:] != (3, 3):
        shape = list(rotation.shape) if isinstance(rotation, Tensor) else type(rotation).__name__
        raise ValueError(f"rotation must have shape [B, 3, 3]; got {shape}")
    _check_same_batch("x", x, "rotation", rotation)
    return x @ rotation.transpose(-1, -2).to(x.dtype)


# --------------------------------------------------------------------------- normals


@torch.no_grad()
def estimate_normals(x: Tensor, k: int = 10, *, neighbours: Tensor | None = None) -> Tensor:
    """Unit normals by PCA of each point's k nearest neighbours (the point included).

    The normal is the eigenvector of the smallest eigenvalue of the neighbourhood
    covariance, oriented outward: ``<n_i, x_i - centroid> >= 0`` with the cloud's
    centroid. Where that product is ~0 (``|.| <= 1e-5 * cloud radius``, e.g. a flat
    cloud), the sign is fixed instead so the largest-magnitude component is positive.
    Normals describe the clean cloud: computed without autograd.

    Args:
        x: ``[B, N, 3]`` float.
        k: neighbourhood size, ``3 <= k <= N``.
        neighbours: ``[B, N, >= k]`` indices of each point's nearest points of ``x``, ascending,
            the point itself first (``knn(x, m)[0]`` for some ``m >= k``), when the caller has
            them: the first ``k`` columns are used instead of a new search.

    Returns:
        ``[B, N, 3]`` unit normals, same dtype as ``x``.
    """
    _check_cloud("x", x)
    n = x.shape[1]
    if not isinstance(k, int) or k < 3 or k > n:
        raise ValueError(f"k must be an int in [3, N = {n}] (points of x [B, N, 3]); got k={k}")
    if neighbours is None:
        idx, _ = knn(x, k)
    elif neighbours.shape[:2] != x.shape[:2] or neighbours.shape[2] < k:
        raise ValueError(f"neighbours must be [B, N, >= k] = [{x.shape[0]}, {n}, >= {k}]; got {list(neighbours.shape)}")
    else:
        idx = neighbours[..., :k]
    nbrs = index_points(x, idx)  # [B, N, k, 3]
    centred = nbrs - nbrs.mean(dim=2, keepdim=True)
    cov = centred.transpose(-1, -2) @ centred / k  # [B, N, 3, 3]
    # batched 3x3 eigh, in chunks: CUDA's batched solver fails on very large batches
    # (seen at 256 x 1,024 matrices on an H100)
    flat = cov.reshape(-1, 3, 3)
    vecs = torch.cat([torch.linalg.eigh(part)[1] for part in flat.split(_EIGH_CHUNK)]).reshape(cov.shape)
    normals = vecs[..., :, 0]  # eigenvalues ascending: column 0 is the smallest
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    offset = x - x.mean(dim=1, keepdim=True)
    dot = (normals * offset).sum(-1)  # [B, N]
    tol = 1e-5 * offset.norm(dim=-1).amax(dim=1, keepdim=True)  # [B, 1]
    major = normals.gather(-1, normals.abs().argmax(dim=-1, keepdim=True)).squeeze(-1)
    flip = torch.where(dot.abs() > tol, dot < 0, major < 0)
    return torch.where(flip.unsqueeze(-1), -normals, normals)
