"""Solid primitives for SynthShapes: area-uniform surface samples and exact inside tests.

Every primitive is a solid described by one row of ``PARAM_DIM`` floats, so a batch of
``M`` shapes' parts is an array ``[M, PARAM_DIM]`` and every operation is vectorised over
``M`` (and over the points). Coordinates: y is up. Layouts (unused slots are zero):

=========  ====  ==============================================================
type       code  parameters
=========  ====  ==============================================================
box        0     centre (3), half-extents (3)
cylinder   1     centre (3), radius, half-length, axis (0 = x, 1 = y, 2 = z)
ellipsoid  2     centre (3), radii (3)
torus      3     centre (3), major radius R, minor radius r, axis
revolved   4     axis foot (x, y0, z), height, knot fractions t1 t2, outer radii
                 r0..r3, inner radii i0..i3 (a hollow solid of revolution about y;
                 knots at y0 + height * (0, t1, t2, 1); radii interpolate linearly)
=========  ====  ==============================================================

``sample(type, params, u)`` returns points ``[M, K, 3]`` and an acceptance probability
``[M, K]``: keeping a point with that probability makes the samples area-uniform
(ellipsoids and tori are not uniform under their natural parametrisation).
``contains(type, params, points, margin)`` answers "is the point inside the solid,
deeper than ``margin``" exactly, for ``points [M, Q, 3]``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["BOX", "CYLINDER", "ELLIPSOID", "PARAM_DIM", "REVOLVED", "TORUS", "area", "choose_weighted", "contains", "sample"]

BOX, CYLINDER, ELLIPSOID, TORUS, REVOLVED = 0, 1, 2, 3, 4
NAMES = {BOX: "box", CYLINDER: "cylinder", ELLIPSOID: "ellipsoid", TORUS: "torus", REVOLVED: "revolved"}
PARAM_DIM = 16
_EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _axis_frame(local: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Map local (axial, c1, c2) coordinates ``[M, K, 3]`` to world axes for each shape's axis."""
    out = np.empty_like(local)
    for a in range(3):  # three cases, each vectorised over shapes and points
        rows = axis == a
        if rows.any():
            out[rows, :, a] = local[rows, :, 0]
            out[rows, :, (a + 1) % 3] = local[rows, :, 1]
            out[rows, :, (a + 2) % 3] = local[rows, :, 2]
    return out


def _to_axis_frame(rel: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Inverse of ``_axis_frame``: world offsets ``[M, Q, 3]`` -> (axial, c1, c2)."""
    out = np.empty_like(rel)
    for a in range(3):
        rows = axis == a
        if rows.any():
            out[rows, :, 0] = rel[rows, :, a]
            out[rows, :, 1] = rel[rows, :, (a + 1) % 3]
            out[rows, :, 2] = rel[rows, :, (a + 2) % 3]
    return out


def choose_weighted(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per row, pick a column with probability proportional to ``weights [M, F]`` for uniforms ``u [M, K]``."""
    cum = np.cumsum(weights, axis=1)
    total = cum[:, -1:]
    cum = cum / np.maximum(total, _EPS)
    # count of cumulative boundaries below u = chosen face (vectorised searchsorted per row)
    return np.minimum((u[:, :, None] >= cum[:, None, :-1]).sum(-1), weights.shape[1] - 1)


def _pick(stack: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """``stack [F, M, K, 3]`` indexed by ``choice [M, K]`` -> ``[M, K, 3]``."""
    return np.take_along_axis(stack, choice[None, :, :, None], axis=0)[0]


def _frustum_t(ra: np.ndarray, rb: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Fraction along a frustum side whose area density grows linearly from ``ra`` to ``rb``."""
    dr = rb - ra
    flat = np.abs(dr) < 1e-9
    safe = np.where(flat, 1.0, dr)
    t = (-ra + np.sqrt(np.maximum(ra**2 + u * (rb**2 - ra**2), 0.0))) / safe
    return np.clip(np.where(flat, u, t), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# areas
# ---------------------------------------------------------------------------------------------
def _revolved_parts(p: np.ndarray):
    y0, h = p[:, 1], p[:, 3]
    ys = y0[:, None] + h[:, None] * np.stack([np.zeros_like(h), p[:, 4], p[:, 5], np.ones_like(h)], 1)
    return ys, p[:, 6:10], p[:, 10:14]


def _revolved_face_areas(p: np.ndarray) -> np.ndarray:
    """``[M, 8]``: 3 outer frusta, 3 inner frusta, top annulus, bottom annulus."""
    ys, ro, ri = _revolved_parts(p)
    dy = np.diff(ys, axis=1)
    outer = np.pi * (ro[:, :-1] + ro[:, 1:]) * np.hypot(dy, np.diff(ro, axis=1))
    inner = np.pi * (ri[:, :-1] + ri[:, 1:]) * np.hypot(dy, np.diff(ri, axis=1))
    top = np.pi * np.maximum(ro[:, 3] ** 2 - ri[:, 3] ** 2, 0.0)
    bottom = np.pi * np.maximum(ro[:, 0] ** 2 - ri[:, 0] ** 2, 0.0)
    return np.concatenate([outer, inner, top[:, None], bottom[:, None]], axis=1)


def _box_face_areas(p: np.ndarray) -> np.ndarray:
    hx, hy, hz = p[:, 3], p[:, 4], p[:, 5]
    a = np.stack([4 * hy * hz, 4 * hx * hz, 4 * hx * hy], 1)
    return np.concatenate([a, a], axis=1)  # -x -y -z, +x +y +z


def area(kind: int, p: np.ndarray) -> np.ndarray:
    """Surface area ``[M]`` of each solid."""
    if kind == BOX:
        return _box_face_areas(p).sum(1)
    if kind == CYLINDER:
        r, length = p[:, 3], p[:, 4]
        return 2 * np.pi * r * 2 * length + 2 * np.pi * r**2
    if kind == ELLIPSOID:  # Knud Thomsen's formula (relative error < 1.1%)
        a, b, c = p[:, 3], p[:, 4], p[:, 5]
        q = 1.6075
        return 4 * np.pi * (((a * b) ** q + (a * c) ** q + (b * c) ** q) / 3) ** (1 / q)
    if kind == TORUS:
        return 4 * np.pi**2 * p[:, 3] * p[:, 4]
    if kind == REVOLVED:
        return _revolved_face_areas(p).sum(1)
    raise ValueError(f"unknown primitive type {kind}")


# ---------------------------------------------------------------------------------------------
# surface sampling
# ---------------------------------------------------------------------------------------------
def sample(kind: int, p: np.ndarray, rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` surface points per solid: ``([M, k, 3], acceptance [M, k])``."""
    m = p.shape[0]
    centre = p[:, None, 0:3]
    accept = np.ones((m, k))
    if kind == BOX:
        half = p[:, None, 3:6]
        face = choose_weighted(_box_face_areas(p), rng.random((m, k)))
        pts = rng.uniform(-1.0, 1.0, (m, k, 3))
        axis = face % 3
        sign = np.where(face < 3, -1.0, 1.0)
        np.put_along_axis(pts, axis[..., None], sign[..., None], axis=2)
        return centre + pts * half, accept
    if kind == CYLINDER:
        r, length, axis = p[:, 3, None], p[:, 4, None], p[:, 5].astype(int)
        side = 4 * np.pi * p[:, 3] * p[:, 4]
        cap = np.pi * p[:, 3] ** 2
        face = choose_weighted(np.stack([side, cap, cap], 1), rng.random((m, k)))
        theta = rng.uniform(0, 2 * np.pi, (m, k))
        rad = np.where(face == 0, r, r * np.sqrt(rng.random((m, k))))
        axial = np.where(face == 0, rng.uniform(-1, 1, (m, k)) * length, np.where(face == 1, length, -length))
        local = np.stack([axial, rad * np.cos(theta), rad * np.sin(theta)], -1)
        return centre + _axis_frame(local, axis), accept
    if kind == ELLIPSOID:
        radii = p[:, None, 3:6]
        d = rng.normal(size=(m, k, 3))
        d /= np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), _EPS)
        # area element of the map sphere -> ellipsoid, relative to its maximum
        accept = radii.min(-1) * np.sqrt(((d / radii) ** 2).sum(-1))
        return centre + d * radii, np.clip(accept, 0.0, 1.0)
    if kind == TORUS:
        big, small, axis = p[:, 3, None], p[:, 4, None], p[:, 5].astype(int)
        theta = rng.uniform(0, 2 * np.pi, (m, k))
        phi = rng.uniform(0, 2 * np.pi, (m, k))
        ring = big + small * np.cos(phi)
        local = np.stack([small * np.sin(phi), ring * np.cos(theta), ring * np.sin(theta)], -1)
        return centre + _axis_frame(local, axis), ring / (big + small)
    if kind == REVOLVED:
        ys, ro, ri = _revolved_parts(p)
        face = choose_weighted(_revolved_face_areas(p), rng.random((m, k)))
        theta = rng.uniform(0, 2 * np.pi, (m, k))
        u = rng.random((m, k))
        seg = face % 3  # segment of the lateral faces (0..2)
        inner = (face >= 3) & (face < 6)
        radii = np.where(inner[..., None], ri[:, None, :], ro[:, None, :])  # [M, k, 4]
        ra = np.take_along_axis(radii, seg[..., None], -1)[..., 0]
        rb = np.take_along_axis(radii, seg[..., None] + 1, -1)[..., 0]
        ya = np.take_along_axis(np.broadcast_to(ys[:, None, :], radii.shape), seg[..., None], -1)[..., 0]
        yb = np.take_along_axis(np.broadcast_to(ys[:, None, :], radii.shape), seg[..., None] + 1, -1)[..., 0]
        t = _frustum_t(ra, rb, u)
        rad = ra + (rb - ra) * t
        y = ya + (yb - ya) * t
        top, bottom = face == 6, face == 7
        lo = np.where(top, ri[:, None, 3], ri[:, None, 0])
        hi = np.where(top, ro[:, None, 3], ro[:, None, 0])
        ann = np.sqrt(lo**2 + u * np.maximum(hi**2 - lo**2, 0.0))
        rad = np.where(top | bottom, ann, rad)
        y = np.where(top, ys[:, None, 3], np.where(bottom, ys[:, None, 0], y))
        pts = np.stack([p[:, None, 0] + rad * np.cos(theta), y, p[:, None, 2] + rad * np.sin(theta)], -1)
        return pts, accept
    raise ValueError(f"unknown primitive type {kind}")


# ---------------------------------------------------------------------------------------------
# inside tests
# ---------------------------------------------------------------------------------------------
def _interp_radius(y: np.ndarray, ys: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Piecewise-linear radius at heights ``y [M, Q]`` for knots ``ys, radii [M, 4]``."""
    seg = np.clip((y[..., None] >= ys[:, None, 1:3]).sum(-1), 0, 2)  # [M, Q] in 0..2
    ya = np.take_along_axis(ys, seg, 1)
    yb = np.take_along_axis(ys, seg + 1, 1)
    ra = np.take_along_axis(radii, seg, 1)
    rb = np.take_along_axis(radii, seg + 1, 1)
    t = np.clip((y - ya) / np.maximum(yb - ya, _EPS), 0.0, 1.0)
    return ra + (rb - ra) * t


def contains(kind: int, p: np.ndarray, pts: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """``[M, Q]`` bool: ``pts [M, Q, 3]`` lies inside solid ``p [M, PARAM_DIM]``, deeper than ``margin``."""
    rel = pts - p[:, None, 0:3]
    if kind == BOX:
        return (np.abs(rel) <= p[:, None, 3:6] - margin).all(-1)
    if kind == CYLINDER:
        loc = _to_axis_frame(rel, p[:, 5].astype(int))
        rho = np.hypot(loc[..., 1], loc[..., 2])
        return (np.abs(loc[..., 0]) <= p[:, None, 4] - margin) & (rho <= p[:, None, 3] - margin)
    if kind == ELLIPSOID:
        radii = np.maximum(p[:, None, 3:6] - margin, _EPS)
        return ((rel / radii) ** 2).sum(-1) <= 1.0
    if kind == TORUS:
        loc = _to_axis_frame(rel, p[:, 5].astype(int))
        ring = np.hypot(loc[..., 1], loc[..., 2]) - p[:, None, 3]
        return ring**2 + loc[..., 0] ** 2 <= np.maximum(p[:, None, 4] - margin, 0.0) ** 2
    if kind == REVOLVED:
        ys, ro, ri = _revolved_parts(p)
        y = pts[..., 1]
        rho = np.hypot(rel[..., 0], rel[..., 2])
        inside_span = (y >= ys[:, None, 0] + margin) & (y <= ys[:, None, 3] - margin)
        outer = _interp_radius(y, ys, ro)
        inner = _interp_radius(y, ys, ri)
        hollow = inner > 0
        return inside_span & (rho <= outer - margin) & (~hollow | (rho >= inner + margin))
    raise ValueError(f"unknown primitive type {kind}")
