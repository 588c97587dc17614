"""Neighbour searches on batched point clouds (k nearest, nearest, near a fixed reference)
and the set distances built on them (Chamfer, Hausdorff).

Searches pick indices without autograd, in chunks of query points so that one
``[B, chunk, N]`` distance block stays bounded, then recompute the returned distances
exactly from the gathered points, so gradients flow to both inputs and memory stays
``O(B * Q * k + B * chunk * N)``. Every distance is squared (see :mod:`benchmark.core.geometry`).
Floor 0: imports torch and ``benchmark.core.points`` only.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from benchmark.core.points import _check_cloud, _check_same_batch, index_points

__all__ = [
    "ReferenceNeighbours",
    "chamfer_distance",
    "hausdorff_distance",
    "knn",
    "knn_indices",
    "nearest_neighbor",
]

#: Upper bound on the elements of one ``[B, chunk, N]`` distance block (16 MiB float32). Small
#: blocks are also faster: the search reads each block right after writing it, while it is
#: still in cache (knn 16 of 1,024 points, 16 clouds, 2 threads: 53 ms with 64 Mi-element
#: blocks, 38 ms with 4 Mi; k = 2: 35 -> 19 ms). Per-row results do not depend on the chunk.
_MAX_BLOCK_ELEMENTS = 4 * 2**20

#: directions of the set distances (chamfer_distance, hausdorff_distance)
_MODES = ("adv2ori", "ori2adv", "both")


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(map(repr, _MODES))}")


def _auto_chunk(batch: int, n: int, chunk_size: int | None) -> int:
    """Query points per chunk: ``chunk_size`` if given, else the most that keep
    ``batch * chunk * n`` under ``_MAX_BLOCK_ELEMENTS``."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of query points; got {chunk_size}")
        return int(chunk_size)
    return max(1, _MAX_BLOCK_ELEMENTS // max(1, batch * n))


# --------------------------------------------------------------------------- neighbours


def _smallest(d: Tensor, k: int) -> Tensor:
    """Column indices ``[..., k]`` of the ``k`` smallest entries of each row of ``d [..., N]``,
    ascending (the first of equal entries first). Modifies ``d``.

    For ``k <= 2``, ``min`` once or twice (masking the first minimum): ``torch.min`` over the
    last dim is ~3x faster than ``argmin`` or ``topk`` on the CPU (a 16 x 256 x 1,024 block:
    1.2 ms vs 3.2 / 3.6 ms, 2 threads), and k = 1 (nearest neighbours: every Chamfer distance)
    and k = 2 (SOR) are the hot cases.
    """
    if k > 2:
        return d.topk(k, dim=-1, largest=False, sorted=True).indices
    first = d.min(dim=-1, keepdim=True).indices
    if k == 1:
        return first
    return torch.cat([first, d.scatter_(-1, first, math.inf).min(dim=-1, keepdim=True).indices], dim=-1)


@torch.no_grad()
def _neighbour_indices(
    x: Tensor, query: Tensor, k: int, *, exclude_self: bool, chunk_size: int | None
) -> Tensor:
    """Indices ``[B, Q, k]`` into ``x`` of each query's k nearest points (no autograd).

    Uses ``torch.cdist`` + ``topk`` per chunk of query points; order within the k columns
    is ascending by the (approximate) cdist distance.
    """
    batch, n, _ = x.shape
    q = query.shape[1]
    centre = x.mean(dim=1, keepdim=True)
    xc = x - centre
    qc = query - centre
    chunk = _auto_chunk(batch, n, chunk_size)
    parts = []
    for start in range(0, q, chunk):
        stop = min(start + chunk, q)
        d = torch.cdist(qc[:, start:stop], xc)  # [B, c, N], Euclidean (monotone in squared)
        if exclude_self:
            rows = torch.arange(stop - start, device=x.device)
            d[:, rows, rows + start] = math.inf
        parts.append(_smallest(d, k))
    if not parts:  # Q == 0
        return torch.empty(batch, 0, k, dtype=torch.long, device=x.device)
    return torch.cat(parts, dim=1)


def knn_indices(
    x: Tensor,
    k: int,
    query: Tensor | None = None,
    *,
    exclude_self: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """Indices ``[B, Q, k]`` (ascending distance, no autograd) of the k nearest rows of ``x``.

    Like :func:`knn` but for any feature dimension (``x [B, N, D]``, ``query [B, Q, D]``)
    and without the distances: what feature-space graphs (DGCNN) need.
    """
    _check_cloud("x", x, dim=None)
    if query is None:
        query = x
    else:
        _check_cloud("query", query, dim=x.shape[-1])
        _check_same_batch("x", x, "query", query)
    available = x.shape[1] - (1 if exclude_self else 0)
    if not isinstance(k, int) or k < 1 or k > available:
        raise ValueError(f"k must be an int in [1, {available}] (points of x available); got k={k}")
    return _neighbour_indices(x, query, k, exclude_self=exclude_self, chunk_size=chunk_size)


def knn(
    x: Tensor,
    k: int,
    query: Tensor | None = None,
    *,
    exclude_self: bool = False,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The k nearest points of ``x`` to each query point.

    Args:
        x: ``[B, N, 3]`` float, the points searched.
        k: neighbours per query, ``1 <= k <= N`` (``<= N - 1`` with ``exclude_self``).
        query: ``[B, Q, 3]`` float; defaults to ``x``.
        exclude_self: drop each point itself (its own index, not merely distance-0
            points, so duplicates of a point still count as its neighbours). Only valid
            when the query set is ``x`` (``query`` None or ``x`` itself).
        chunk_size: query points per chunk; None picks it so one ``[B, chunk, N]``
            distance block stays under ``_MAX_BLOCK_ELEMENTS`` (4 Mi).

    Returns:
        ``(idx, dist)``: ``idx`` ``[B, Q, k]`` long, indices into ``x`` in ascending
        distance order; ``dist`` ``[B, Q, k]`` squared distances, recomputed exactly from
        the gathered points and differentiable w.r.t. ``x`` and ``query``.
    """
    _check_cloud("x", x)
    if query is None:
        query = x
    else:
        _check_cloud("query", query)
        _check_same_batch("x", x, "query", query)
        if exclude_self and query is not x:
            raise ValueError("exclude_self=True needs the query set to be x itself; pass query=None")
    n = x.shape[1]
    available = n - 1 if exclude_self else n
    if not isinstance(k, int) or k < 1 or k > available:
        what = f"N - 1 = {available} other points" if exclude_self else f"N = {available} points"
        raise ValueError(f"k must be an int in [1, {available}]: x has {what}; got k={k}")
    idx = _neighbour_indices(x, query, k, exclude_self=exclude_self, chunk_size=chunk_size)
    dist = ((query.unsqueeze(2) - index_points(x, idx)) ** 2).sum(-1)
    if k > 1:  # exact distances may reorder near-ties; sort the k columns only
        dist, order = dist.sort(dim=-1, stable=True)
        idx = idx.gather(-1, order)
    return idx, dist


def nearest_neighbor(a: Tensor, b: Tensor, *, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """For every point of ``a``, the squared distance to its nearest point of ``b``.

    The argmin is found without autograd in chunks of ``a``'s points (memory
    ``O(B * N + B * chunk * M)``); the distance is then recomputed as
    ``((a - b[idx]) ** 2).sum(-1)``, so gradients reach both ``a`` and ``b`` and equal
    those of a brute-force ``min`` over the full distance matrix.

    Args:
        a: ``[B, N, 3]`` float, the query points.
        b: ``[B, M, 3]`` float, ``M >= 1``.
        chunk_size: points of ``a`` per chunk; None = automatic (see :func:`knn`).

    Returns:
        ``(dist, idx)``: ``dist`` ``[B, N]`` squared distances; ``idx`` ``[B, N]`` long,
        indices into ``b``.
    """
    _check_cloud("a", a)
    _check_cloud("b", b)
    _check_same_batch("a", a, "b", b)
    if b.shape[1] < 1:
        raise ValueError("b must hold at least one point per cloud: shape [B, M >= 1, 3]")
    idx = _neighbour_indices(b, a, 1, exclude_self=False, chunk_size=chunk_size).squeeze(-1)
    dist = ((a - index_points(b, idx)) ** 2).sum(-1)
    return dist, idx


class _Tier(NamedTuple):
    """The first ``w`` candidates of every reference point (nearest first) and what the
    searches over them need: ``candidates [B, N, w]``, their coordinates one plane per axis
    ``planes [3, B, N, w]`` (distances are three element-wise passes instead of a reduction
    over a 3-wide last dim), ``radius [B, N]`` (no reference point outside them is nearer the
    point's own reference position), ``is_self [B, N, w]`` and ``flat [B * N * w]`` (rows of
    the flattened ``[B * N]`` points: fixed, not recomputed per query)."""

    candidates: Tensor
    planes: Tensor
    radius: Tensor
    is_self: Tensor
    flat: Tensor

    @classmethod
    def of(cls, ref: Tensor, candidates: Tensor, sq_dist: Tensor) -> _Tier:
        n, w = ref.shape[1], candidates.shape[-1]
        radius = sq_dist[..., -1].sqrt() if w < n else torch.full_like(sq_dist[..., -1], math.inf)
        planes = index_points(ref, candidates).permute(3, 0, 1, 2).contiguous()
        is_self = candidates == torch.arange(n, device=ref.device).view(1, n, 1)
        return cls(candidates, planes, radius, is_self, _flat_rows(candidates, n))

    def rows(self, rows: Tensor | None) -> _Tier:
        """The tier of the clouds ``rows`` (None: all)."""
        if rows is None:
            return self
        n = self.candidates.shape[1]
        candidates = self.candidates[rows]
        return _Tier(candidates, self.planes[:, rows], self.radius[rows], self.is_self[rows], _flat_rows(candidates, n))


class ReferenceNeighbours:
    """Exact neighbour queries about clouds whose points stay near those of a fixed reference.

    An attack that moves every point of a clean cloud a little (``adv_i = ref_i + delta_i``)
    asks, every iteration, for each adversarial point's nearest reference point (Chamfer
    ``adv2ori``) and for its k nearest adversarial points (kNN smoothness). Instead of an
    ``N x N`` search each time, each point keeps the ``m`` reference points nearest its own
    reference position (found once); the answer from those candidates is provably the full
    search's when the moves are small against the candidates' radius (triangle inequality),
    and the points where that bound fails are searched in full. Each query first searches the
    ``near`` nearest candidates alone (a quarter of the work while the moves are small) and
    all ``m`` only for the points where the near ones' bound fails; once over a quarter of the
    points fail it, the later queries of that kind search all ``m`` at once. Results equal
    :func:`nearest_neighbor` / :func:`knn` up to the order of exact ties, whichever tier answers.

    Args:
        ref: ``[B, N, 3]`` the reference (clean) clouds.
        m: candidates per point (capped at ``N``).
        near: candidates of the first tier (capped at ``m``; ``near >= m``: one tier).
    """

    #: absolute slack on the bounds, for float rounding in the distances
    _SLACK = 1e-5
    #: share of points failing the near tier's bound after which a kind of query starts wide
    _WIDEN = 0.25

    def __init__(self, ref: Tensor, m: int = 64, near: int = 16) -> None:
        _check_cloud("ref", ref)
        self.ref = ref.detach()
        n = ref.shape[1]
        self.m = max(1, min(int(m), n))
        self.near = max(1, min(int(near), self.m))
        with torch.no_grad():
            self.candidates, dist = knn(self.ref, self.m)  # [B, N, m], ascending; each point is its own first
            tiers = [_Tier.of(self.ref, self.candidates, dist)]
            if self.near < self.m:
                tiers.insert(0, _Tier.of(self.ref, self.candidates[..., : self.near].contiguous(), dist[..., : self.near]))
        #: the tiers a query searches in turn (one when ``near == m``)
        self.tiers: tuple[_Tier, ...] = tuple(tiers)
        #: per kind of query, the tier it starts at (raised once the near tier stops sufficing)
        self._start = {"nearest": 0, "knn": 0}
        #: points searched in full by the last query (where the candidates did not suffice)
        self.fallbacks = 0

    def _moved(self, adv: Tensor, rows: Tensor | None) -> Tensor:
        ref = self.ref if rows is None else self.ref[rows]
        return (adv.detach() - ref).norm(dim=-1)  # [b, N]

    def _first_tier(self, kind: str, rows: Tensor | None) -> tuple[int, _Tier]:
        start = self._start[kind]
        return start, self.tiers[start].rows(rows)

    def _widen(self, kind: str, start: int, bad: Tensor) -> tuple[Tensor, Tensor] | None:
        """After the first tier answered with ``bad [b, N]`` failing its bound: the ``(clouds,
        points)`` the wide tier should answer (None: no wider tier or nothing failed); notes
        when the near tier stops sufficing."""
        if start + 1 >= len(self.tiers) or not bool(bad.any()):
            return None
        if float(bad.float().mean()) > self._WIDEN:
            self._start[kind] = start + 1
        return bad.nonzero(as_tuple=True)

    def nearest_reference(self, adv: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """As ``nearest_neighbor(adv, ref[rows])``: ``(dist [b, N] squared, differentiable w.r.t. adv; idx [b, N])``.

        ``adv [b, N, 3]``: point ``i`` a moved copy of reference point ``i`` of cloud ``rows[j]``
        (``rows`` None: all ``B`` clouds).
        """
        ref = self.ref if rows is None else self.ref[rows]
        with torch.no_grad():
            x = adv.detach()
            moved = self._moved(x, rows)
            start, tier = self._first_tier("nearest", rows)
            d = _planar_sq_dists(x, tier.planes)  # [b, N, w]
            idx = tier.candidates.gather(-1, d.min(-1, keepdim=True).indices).squeeze(-1)
            # the nearest reference point lies within 2 * moved of the point's own reference position
            bad = ~(2 * moved + self._SLACK < tier.radius)
            failing = self._widen("nearest", start, bad)
            if failing is not None:
                clouds, points = failing
                wide, owner = self.tiers[-1], _owners(clouds, rows)
                d = _planar_sq_dists(x[clouds, points].unsqueeze(0), wide.planes[:, owner, points].unsqueeze(1))[0]
                idx[clouds, points] = wide.candidates[owner, points].gather(-1, d.min(-1, keepdim=True).indices)[:, 0]
                bad[clouds, points] = ~(2 * moved[clouds, points] + self._SLACK < wide.radius[owner, points])
            self.fallbacks = int(bad.sum())
            if self.fallbacks:
                _full_search(bad, idx.unsqueeze(-1), x, ref, 1, exclude_self=False)
        return ((adv - index_points(ref, idx)) ** 2).sum(-1), idx

    def knn_within(self, adv: Tensor, k: int, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """As ``knn(adv, k, exclude_self=True)``: ``(idx [b, N, k], dist [b, N, k])``, ascending,
        ``dist`` squared and differentiable w.r.t. ``adv`` (see :meth:`nearest_reference` for ``rows``)."""
        b, n = adv.shape[:2]
        if not isinstance(k, int) or not 1 <= k <= min(n - 1, self.m - 1):
            raise ValueError(f"k must be an int in [1, {min(n - 1, self.m - 1)}] (candidates m={self.m}); got k={k}")
        with torch.no_grad():
            x = adv.detach()
            moved = self._moved(x, rows)
            farthest = moved.amax(dim=1, keepdim=True)  # [b, 1]
            start, tier = self._first_tier("knn", rows)
            if k > tier.candidates.shape[-1] - 1:  # the near tier holds too few: start wide
                start, tier = len(self.tiers) - 1, self.tiers[-1].rows(rows)
            planes = x.permute(2, 0, 1).reshape(3, b * n).index_select(1, tier.flat).view(3, *tier.candidates.shape)
            d = _planar_sq_dists(x, planes).masked_fill_(tier.is_self, math.inf)  # [b, N, w], not itself
            top = d.topk(k, dim=-1, largest=False, sorted=True)
            idx = tier.candidates.gather(-1, top.indices)
            # a point outside the candidates is at least radius - moved_i - max moved away
            bad = ~(tier.radius - moved - farthest - self._SLACK >= top.values[..., -1].clamp_min(0).sqrt())
            failing = self._widen("knn", start, bad)
            if failing is not None:
                clouds, points = failing
                wide, owner = self.tiers[-1], _owners(clouds, rows)
                cand = wide.candidates[owner, points]  # [F, m]
                planes = x.permute(2, 0, 1)[:, clouds.unsqueeze(1), cand]  # [3, F, m]
                d = _planar_sq_dists(x[clouds, points].unsqueeze(0), planes.unsqueeze(1))[0]
                top = d.masked_fill_(wide.is_self[owner, points], math.inf).topk(k, dim=-1, largest=False, sorted=True)
                idx[clouds, points] = cand.gather(-1, top.indices)
                bound = wide.radius[owner, points] - moved[clouds, points] - farthest[clouds, 0]
                bad[clouds, points] = ~(bound - self._SLACK >= top.values[..., -1].clamp_min(0).sqrt())
            self.fallbacks = int(bad.sum())
            if self.fallbacks:
                _full_search(bad, idx, x, x, k, exclude_self=True)
        dist = ((adv.unsqueeze(2) - index_points(adv, idx)) ** 2).sum(-1)
        if k > 1:  # exact distances, ascending (as knn)
            dist, order = dist.sort(dim=-1, stable=True)
            idx = idx.gather(-1, order)
        return idx, dist


def _owners(clouds: Tensor, rows: Tensor | None) -> Tensor:
    """Indices into the reference's clouds of the queried clouds ``clouds`` (indices into ``rows``)."""
    return clouds if rows is None else rows[clouds]


#: a cloud with more than this fraction of its points failing the candidates' bound is searched
#: whole (chunked ``cdist``) instead of point by point: the per-point rows materialise
#: ``[F, N, 3]`` differences, which once many points fail (long runs whose moves reach the clip)
#: cost several times the whole-cloud search (16 clouds of 1,024 points, 1 thread: per point
#: 32 / 91 / 485 ms at 12 / 25 / 100% failing, whole clouds ~55-60 ms at any share)
_DENSE_FALLBACK = 0.2


def _full_search(bad: Tensor, idx: Tensor, x: Tensor, ref: Tensor, k: int, *, exclude_self: bool) -> None:
    """Overwrite ``idx[c, i]`` (``[b, N, k]``) with the exact ``k`` nearest points of ``ref[c]``
    to ``x[c, i]`` (ascending) wherever ``bad[c, i]`` (``[b, N]`` bool); ``exclude_self``: not
    point ``i`` itself (``ref`` is ``x``). Clouds with many bad points are searched whole."""
    n = x.shape[1]
    dense = bad.sum(1) > _DENSE_FALLBACK * n  # [b]
    if bool(dense.any()):
        rows = dense.nonzero().squeeze(1)
        xs, refs = x[rows], ref[rows]
        # a few more than k by cdist (rounded), then the k nearest by exact distances: the
        # same choice as the per-point rows below
        wide = min(k + 2, n - 1 if exclude_self else n)
        found = _neighbour_indices(refs, xs, wide, exclude_self=exclude_self, chunk_size=None)
        exact = ((xs.unsqueeze(2) - index_points(refs, found)) ** 2).sum(-1)
        found = found.gather(-1, exact.topk(k, dim=-1, largest=False, sorted=True).indices)
        keep = bad[rows].unsqueeze(-1)
        idx[rows] = torch.where(keep, found, idx[rows])
        bad = bad & ~dense.unsqueeze(1)
    clouds, points = bad.nonzero(as_tuple=True)
    if not len(points):
        return
    full = ((x[clouds, points].unsqueeze(1) - ref[clouds]) ** 2).sum(-1)  # [F, N]
    if exclude_self:
        full[torch.arange(len(points), device=x.device), points] = math.inf
    pick = full.min(-1, keepdim=True).indices if k == 1 else full.topk(k, dim=-1, largest=False, sorted=True).indices
    idx[clouds, points] = pick


def _flat_rows(candidates: Tensor, n: int) -> Tensor:
    """``[b, N, m]`` indices into each cloud -> ``[b * N * m]`` rows of the flattened ``[b * n]`` points."""
    b = candidates.shape[0]
    return (candidates + (torch.arange(b, device=candidates.device) * n).view(b, 1, 1)).reshape(-1)


def _planar_sq_dists(x: Tensor, planes: Tensor) -> Tensor:
    """``x [b, N, 3]``, ``planes [3, b, N, m]`` (candidates' coordinates per axis) ->
    ``[b, N, m]`` squared distances from each point to its candidates."""
    d = (planes[0] - x[..., 0:1]).square_()
    d.add_((planes[1] - x[..., 1:2]).square_())
    return d.add_((planes[2] - x[..., 2:3]).square_())


# --------------------------------------------------------------------------- set distances


def _directed(a: Tensor, b: Tensor, mode: str) -> tuple[Tensor, ...]:
    """Per-point nearest squared distances ``[B, *]`` for the directions ``mode`` needs."""
    _check_mode(mode)
    out = []
    if mode in ("adv2ori", "both"):
        out.append(nearest_neighbor(a, b)[0])
    if mode in ("ori2adv", "both"):
        out.append(nearest_neighbor(b, a)[0])
    return tuple(out)


def chamfer_distance(a: Tensor, b: Tensor, *, mode: str = "adv2ori") -> Tensor:
    """Chamfer distance from squared nearest-neighbour distances.

    Args:
        a: ``[B, N, 3]``, the adversarial cloud.
        b: ``[B, M, 3]``, the original cloud.
        mode: ``"adv2ori"`` = mean over points of ``a`` of the squared distance to the
            nearest point of ``b`` (PROTOCOL.md section 1); ``"ori2adv"`` = the reverse;
            ``"both"`` = the sum of the two means.

    Returns:
        ``[B]`` squared units, differentiable w.r.t. ``a`` and ``b``.
    """
    return sum(d.mean(dim=1) for d in _directed(a, b, mode))


def hausdorff_distance(a: Tensor, b: Tensor, *, mode: str = "adv2ori") -> Tensor:
    """Hausdorff distance from squared nearest-neighbour distances.

    Args:
        a: ``[B, N, 3]``, the adversarial cloud.
        b: ``[B, M, 3]``, the original cloud.
        mode: ``"adv2ori"`` = max over points of ``a`` of the squared distance to the
            nearest point of ``b``; ``"ori2adv"`` = the reverse; ``"both"`` = the max of
            the two directed values.

    Returns:
        ``[B]`` squared units, differentiable w.r.t. ``a`` and ``b``.
    """
    values = [d.amax(dim=1) for d in _directed(a, b, mode)]
    return values[0] if len(values) == 1 else torch.maximum(values[0], values[1])
