"""SynthShapes class recipes: how each ModelNet40-named object is assembled from solids.

A recipe ``(rng, m) -> list[Part]`` draws the proportions of ``m`` objects of its class at
once (every argument of a part builder is a scalar or an ``[m]`` array) and returns their
parts in a canonical frame (y up, roughly unit size). Optional parts carry a ``present``
mask, so two objects of one class can differ in structure (a chair with or without
armrests). ``CLASSES`` (bottom) fixes the class order, hence the label ids.

One file over ~400 lines on purpose: it is one table, forty short recipes written in the
part builders' small vocabulary (top), and splitting it would only scatter the classes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import primitives as prim

__all__ = ["CLASSES", "Part"]

Part = tuple[int, np.ndarray, np.ndarray]  # (primitive type, params [M, PARAM_DIM], present [M])


# ---------------------------------------------------------------------------------------------
# part builders: every argument is a scalar or an [M] array
# ---------------------------------------------------------------------------------------------
def _params(m: int, *columns: Any) -> np.ndarray:
    out = np.zeros((m, prim.PARAM_DIM))
    for i, col in enumerate(columns):
        out[:, i] = col
    return out


def _present(m: int, present: Any) -> np.ndarray:
    return np.broadcast_to(np.asarray(present, dtype=bool), (m,)).copy()


def box(m: int, c: Sequence[Any], half: Sequence[Any], present: Any = True) -> Part:
    return prim.BOX, _params(m, *c, *half), _present(m, present)


def cyl(m: int, c: Sequence[Any], r: Any, half_len: Any, axis: int, present: Any = True) -> Part:
    return prim.CYLINDER, _params(m, *c, r, half_len, axis), _present(m, present)


def ell(m: int, c: Sequence[Any], radii: Sequence[Any], present: Any = True) -> Part:
    return prim.ELLIPSOID, _params(m, *c, *radii), _present(m, present)


def torus(m: int, c: Sequence[Any], big: Any, small: Any, axis: int, present: Any = True) -> Part:
    return prim.TORUS, _params(m, *c, big, small, axis), _present(m, present)


def rev(
    m: int,
    foot: Sequence[Any],
    height: Any,
    knots: Sequence[Any],
    outer: Sequence[Any],
    inner: Sequence[Any] = (0, 0, 0, 0),
    present: Any = True,
) -> Part:
    """Solid of revolution about y from ``foot`` (x, y0, z), knots at fractions (0, t1, t2, 1)."""
    return prim.REVOLVED, _params(m, *foot, height, *knots, *outer, *inner), _present(m, present)


def _legs(m: int, xs: Any, zs: Any, y_top: Any, height: Any, r: Any, present: Any = True) -> list[Part]:
    """Four vertical cylinder legs at (+-xs, +-zs), tops at ``y_top``."""
    return [
        cyl(m, (sx * xs, y_top - height / 2, sz * zs), r, height / 2, 1, present)
        for sx in (-1, 1)
        for sz in (-1, 1)
    ]


# ---------------------------------------------------------------------------------------------
# class recipes: (rng, m) -> parts; canonical frame, y up, roughly unit size
# ---------------------------------------------------------------------------------------------
def _airplane(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    length, r = U(0.8, 1.1), U(0.07, 0.12)
    span, chord, wing_x = U(0.7, 1.1), U(0.14, 0.28), U(-0.15, 0.15)
    tail_span, fin_h = U(0.2, 0.38), U(0.15, 0.3)
    engines = g.random(m) < 0.5
    return [
        cyl(m, (0, 0, 0), r, length, 0),
        ell(m, (length, 0, 0), (U(0.12, 0.3), r, r)),
        box(m, (wing_x, U(-0.03, 0.02), 0), (chord, U(0.01, 0.02), span)),
        box(m, (-length + 0.08, 0, 0), (U(0.06, 0.11), 0.012, tail_span)),
        box(m, (-length + 0.08, r + fin_h / 2, 0), (U(0.07, 0.12), fin_h / 2, 0.012)),
        cyl(m, (wing_x + 0.05, -r - 0.02, span * 0.45), U(0.035, 0.05), U(0.1, 0.16), 0, engines),
        cyl(m, (wing_x + 0.05, -r - 0.02, -span * 0.45), U(0.035, 0.05), U(0.1, 0.16), 0, engines),
    ]


def _bed(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    length, width = U(0.9, 1.1), U(0.5, 0.8)
    base_h, mattress_h = U(0.12, 0.22), U(0.07, 0.14)
    head_h = U(0.25, 0.5)
    return [
        box(m, (0, base_h / 2 + 0.08, 0), (length, base_h / 2, width)),
        box(m, (0, base_h + 0.08 + mattress_h / 2, 0), (length * 0.97, mattress_h / 2, width * 0.97)),
        box(m, (-length - 0.03, (head_h + base_h) / 2 + 0.04, 0), (0.03, (head_h + base_h) / 2 + 0.04, width)),
        box(m, (length + 0.03, (base_h + 0.2) / 2, 0), (0.03, (base_h + 0.2) / 2, width), g.random(m) < 0.5),
        *_legs(m, length * 0.95, width * 0.9, 0.08, 0.08, 0.03),
    ]


def _bench(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    length, depth, height = U(0.9, 1.3), U(0.18, 0.3), U(0.35, 0.5)
    back = g.random(m) < 0.4
    back_h = U(0.25, 0.4)
    return [
        box(m, (0, height, 0), (length, 0.03, depth)),
        *_legs(m, length * 0.85, depth * 0.7, height, height, U(0.025, 0.045)),
        box(m, (0, height + back_h / 2, -depth), (length, back_h / 2, 0.025), back),
    ]


def _bookshelf(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    width, height, depth, t = U(0.4, 0.7), U(0.8, 1.2), U(0.15, 0.3), U(0.015, 0.03)
    shelves = [box(m, (0, height * f, 0), (width, t, depth), g.random(m) < 0.85) for f in (0.3, 0.55, 0.8)]
    return [
        box(m, (-width, height / 2, 0), (t, height / 2, depth)),
        box(m, (width, height / 2, 0), (t, height / 2, depth)),
        box(m, (0, t, 0), (width, t, depth)),
        box(m, (0, height - t, 0), (width, t, depth)),
        box(m, (0, height / 2, -depth), (width, height / 2, t), g.random(m) < 0.7),
        *shelves,
    ]


def _bottle(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    h, rb, neck = U(0.9, 1.3), U(0.14, 0.26), U(0.045, 0.08)
    return [
        rev(m, (0, 0, 0), h, (U(0.5, 0.68), U(0.74, 0.84)), (rb, rb * U(0.95, 1.05), neck, neck)),
        cyl(m, (0, h + 0.03, 0), neck * 1.15, 0.03, 1, g.random(m) < 0.6),
    ]


def _bowl(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    h, foot, rim, wall = U(0.25, 0.45), U(0.15, 0.3), U(0.5, 0.75), U(0.02, 0.05)
    r1, r2 = foot + (rim - foot) * U(0.5, 0.7), foot + (rim - foot) * U(0.85, 0.95)
    return [rev(m, (0, 0, 0), h, (0.35, 0.7), (foot, r1, r2, rim), (0, r1 - wall, r2 - wall, rim - wall))]


def _car(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    length, width, body_h = U(0.9, 1.1), U(0.38, 0.48), U(0.12, 0.2)
    cab_len, cab_h, cab_x = U(0.4, 0.65), U(0.12, 0.2), U(-0.2, 0.1)
    wheel_r = U(0.12, 0.17)
    y_body = wheel_r + body_h / 2
    wheels = [
        cyl(m, (sx * length * 0.65, wheel_r, sz * width), wheel_r, 0.05, 2) for sx in (-1, 1) for sz in (-1, 1)
    ]
    return [
        box(m, (0, y_body, 0), (length, body_h / 2, width)),
        box(m, (cab_x, y_body + body_h / 2 + cab_h / 2, 0), (cab_len, cab_h / 2, width * 0.9)),
        *wheels,
    ]


def _chair(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, d, seat_h, back_h = U(0.3, 0.45), U(0.3, 0.45), U(0.4, 0.55), U(0.4, 0.7)
    arms = g.random(m) < 0.4
    return [
        box(m, (0, seat_h, 0), (w, 0.035, d)),
        box(m, (0, seat_h + back_h / 2, -d + 0.03), (w, back_h / 2, 0.03)),
        *_legs(m, w * 0.85, d * 0.85, seat_h, seat_h, U(0.025, 0.045)),
        box(m, (-w, seat_h + 0.2, 0), (0.03, 0.02, d * 0.9), arms),
        box(m, (w, seat_h + 0.2, 0), (0.03, 0.02, d * 0.9), arms),
        cyl(m, (-w, seat_h + 0.1, d * 0.7), 0.02, 0.1, 1, arms),
        cyl(m, (w, seat_h + 0.1, d * 0.7), 0.02, 0.1, 1, arms),
    ]


def _cone(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    r, h, tip = U(0.3, 0.6), U(0.6, 1.4), U(0.0, 0.04)
    plate = g.random(m) < 0.4
    y0 = np.where(plate, 0.04, 0.0)
    return [
        rev(m, (0, y0, 0), h, (1 / 3, 2 / 3), (r, r + (tip - r) / 3, r + 2 * (tip - r) / 3, tip)),
        box(m, (0, 0.02, 0), (r * 1.2, 0.02, r * 1.2), plate),
    ]


def _cup(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    h, r_bottom, r_top, wall = U(0.55, 0.9), U(0.22, 0.32), U(0.26, 0.4), U(0.025, 0.045)
    r1, r2 = r_bottom + (r_top - r_bottom) * 0.1, r_bottom + (r_top - r_bottom) * 0.55
    big = U(0.13, 0.2)
    return [
        rev(m, (0, 0, 0), h, (0.1, 0.55), (r_bottom, r1, r2, r_top), (0, r1 - wall, r2 - wall, r_top - wall)),
        torus(m, (r2 + big * 0.6, h * 0.5, 0), big, U(0.025, 0.045), 2, g.random(m) < 0.7),
    ]


def _flower_pot(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    h, r0, r3, wall = U(0.4, 0.7), U(0.18, 0.3), U(0.3, 0.48), U(0.03, 0.05)
    r1, r2 = r0 + (r3 - r0) / 3, r0 + 2 * (r3 - r0) / 3
    plant = g.random(m) < 0.6
    return [
        rev(m, (0, 0, 0), h, (1 / 3, 2 / 3), (r0, r1, r2, r3), (0, r1 - wall, r2 - wall, r3 - wall)),
        cyl(m, (0, h * 0.85, 0), r3 - wall, h * 0.02, 1),  # soil
        ell(m, (0, h + U(0.2, 0.4), 0), (U(0.25, 0.45), U(0.2, 0.45), U(0.25, 0.45)), plant),
        cyl(m, (0, h + 0.05, 0), 0.03, 0.1, 1, plant),
    ]


def _guitar(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    lower, upper, depth = U(0.3, 0.4), U(0.22, 0.3), U(0.06, 0.1)
    neck_len = U(0.45, 0.6)
    return [
        ell(m, (0, 0, 0), (lower, lower * U(0.9, 1.1), depth)),
        ell(m, (0, lower + upper * 0.6, 0), (upper, upper * U(0.85, 1.0), depth)),
        box(m, (0, lower + upper * 1.4 + neck_len / 2, 0), (0.04, neck_len / 2, 0.025)),
        box(m, (0, lower + upper * 1.4 + neck_len + 0.07, 0), (0.06, 0.08, 0.025)),
    ]


def _lamp(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    base_r, pole_h, shade_h = U(0.15, 0.3), U(0.5, 1.0), U(0.2, 0.4)
    shade_bottom, shade_top = U(0.2, 0.38), U(0.08, 0.18)
    y_shade = 0.04 + pole_h - shade_h * 0.4
    return [
        cyl(m, (0, 0.02, 0), base_r, 0.02, 1),
        cyl(m, (0, 0.04 + pole_h / 2, 0), U(0.015, 0.03), pole_h / 2, 1),
        rev(
            m,
            (0, y_shade, 0),
            shade_h,
            (1 / 3, 2 / 3),
            (shade_bottom, shade_bottom + (shade_top - shade_bottom) / 3,
             shade_bottom + 2 * (shade_top - shade_bottom) / 3, shade_top),
            (shade_bottom - 0.015, shade_bottom + (shade_top - shade_bottom) / 3 - 0.015,
             shade_bottom + 2 * (shade_top - shade_bottom) / 3 - 0.015, shade_top - 0.015),
        ),
        ell(m, (0, y_shade + 0.05, 0), (0.06, 0.08, 0.06), g.random(m) < 0.5),
    ]


def _monitor(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, h, t = U(0.5, 0.8), U(0.3, 0.5), U(0.02, 0.06)
    neck_h = U(0.1, 0.25)
    return [
        box(m, (0, neck_h + h, 0), (w, h, t)),
        box(m, (0, neck_h / 2 + 0.01, -t - 0.03), (0.04, neck_h / 2 + 0.02, 0.02)),
        box(m, (0, 0.01, -t - 0.03), (U(0.15, 0.3), 0.01, U(0.1, 0.18))),
        box(m, (0, neck_h + h, -t - 0.03), (w * 0.6, h * 0.6, 0.03), g.random(m) < 0.5),
    ]


def _person(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    leg, torso, head = U(0.7, 0.9), U(0.5, 0.65), U(0.1, 0.14)
    hip, shoulder = U(0.08, 0.12), U(0.18, 0.25)
    arm_len, arm_out = U(0.55, 0.7) / 2, U(0.0, 0.25)
    return [
        cyl(m, (-hip, leg / 2, 0), 0.055, leg / 2, 1),
        cyl(m, (hip, leg / 2, 0), 0.055, leg / 2, 1),
        ell(m, (0, leg + torso / 2, 0), (shoulder, torso / 2, 0.11)),
        ell(m, (0, leg + torso + head, 0), (head * 0.85, head, head * 0.9)),
        cyl(m, (-shoulder - 0.05 - arm_out, leg + torso - arm_len, 0), 0.04, arm_len, 1),
        cyl(m, (shoulder + 0.05 + arm_out, leg + torso - arm_len, 0), 0.04, arm_len, 1),
    ]


def _sofa(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    length, depth, seat_h, back_h, arm_h = U(0.8, 1.2), U(0.3, 0.42), U(0.22, 0.32), U(0.25, 0.4), U(0.1, 0.2)
    arm_w = U(0.06, 0.12)
    return [
        box(m, (0, seat_h / 2, 0), (length, seat_h / 2, depth)),
        box(m, (0, seat_h + back_h / 2, -depth + 0.07), (length, back_h / 2 + seat_h * 0.1, 0.07)),
        box(m, (-length - arm_w, (seat_h + arm_h) / 2, 0), (arm_w, (seat_h + arm_h) / 2, depth)),
        box(m, (length + arm_w, (seat_h + arm_h) / 2, 0), (arm_w, (seat_h + arm_h) / 2, depth)),
    ]


def _stool(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    r, h = U(0.2, 0.32), U(0.5, 0.8)
    spread = r * U(0.6, 0.8)
    square = g.random(m) < 0.35
    return [
        cyl(m, (0, h, 0), r, U(0.02, 0.04), 1, ~square),
        box(m, (0, h, 0), (r * 0.9, 0.03, r * 0.9), square),
        *_legs(m, spread, spread, h, h, U(0.02, 0.035)),
        torus(m, (0, h * 0.35, 0), spread * 1.41, 0.015, 1, g.random(m) < 0.5),
    ]


def _table(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, d, h, t = U(0.5, 1.0), U(0.3, 0.6), U(0.45, 0.75), U(0.02, 0.05)
    round_top = g.random(m) < 0.3
    return [
        box(m, (0, h, 0), (w, t, d), ~round_top),
        cyl(m, (0, h, 0), np.maximum(w, d) * 1.05, t, 1, round_top),
        *_legs(m, w * U(0.8, 0.95), d * U(0.8, 0.95), h, h, U(0.025, 0.05)),
        box(m, (0, h * 0.3, 0), (w * 0.85, 0.015, d * 0.85), g.random(m) < 0.3),
        box(m, (w * 0.6, h * 0.8, 0), (w * 0.25, h * 0.15, d * 0.8), (g.random(m) < 0.15) & ~round_top),
    ]


def _toilet(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    base_r, bowl_h, rim = U(0.12, 0.18), U(0.2, 0.3), U(0.25, 0.33)
    tank_h = U(0.25, 0.4)
    y_bowl = U(0.2, 0.28)
    return [
        rev(m, (0, 0, 0), y_bowl, (1 / 3, 2 / 3), (base_r * 1.2, base_r, base_r, base_r * 1.1)),
        rev(m, (0, y_bowl, 0), bowl_h, (1 / 3, 2 / 3),
            (base_r * 1.1, rim * 0.85, rim * 0.97, rim), (0, rim * 0.85 - 0.03, rim * 0.97 - 0.03, rim - 0.03)),
        box(m, (0, y_bowl + bowl_h + tank_h / 2 - 0.05, -rim - 0.08), (rim * 0.95, tank_h / 2, 0.09)),
        torus(m, (0, y_bowl + bowl_h + 0.015, 0), rim - 0.02, 0.02, 1, g.random(m) < 0.6),
    ]


def _vase(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    h, r0, belly, neck, lip, wall = U(1.0, 1.5), U(0.15, 0.25), U(0.3, 0.45), U(0.1, 0.2), U(0.15, 0.3), U(0.02, 0.04)
    t1, t2 = U(0.3, 0.45), U(0.7, 0.85)
    return [rev(m, (0, 0, 0), h, (t1, t2), (r0, belly, neck, lip), (0, belly - wall, neck - wall, lip - wall))]


def _open_box(m: int, c: Sequence[Any], half: Sequence[Any], t: Any, top: Any = True, front: Any = False) -> list[Part]:
    """A hollow box of wall thickness ``t``: bottom, back, two sides, optional top and front."""
    cx, cy, cz = c
    hx, hy, hz = half
    return [
        box(m, (cx, cy - hy + t, cz), (hx, t, hz)),
        box(m, (cx, cy + hy - t, cz), (hx, t, hz), top),
        box(m, (cx - hx + t, cy, cz), (t, hy, hz)),
        box(m, (cx + hx - t, cy, cz), (t, hy, hz)),
        box(m, (cx, cy, cz - hz + t), (hx, hy, t)),
        box(m, (cx, cy, cz + hz - t), (hx, hy, t), front),
    ]


def _bathtub(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    length, width, h = U(0.8, 1.1), U(0.35, 0.5), U(0.25, 0.4)
    return [*_open_box(m, (0, h + 0.04, 0), (length, h, width), U(0.03, 0.06), top=False, front=True),
            *_legs(m, length * 0.85, width * 0.8, 0.06, 0.06, 0.04, g.random(m) < 0.5)]


def _desk(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, d, h, t = U(0.6, 1.0), U(0.3, 0.5), U(0.5, 0.75), U(0.02, 0.04)
    ped_w = U(0.15, 0.25)
    legged = g.random(m) < 0.25  # no pedestal: four legs, like a table (ModelNet's desks vary so)
    two = (g.random(m) < 0.4) & ~legged
    return [
        box(m, (0, h, 0), (w, t, d)),
        box(m, (-w + ped_w, h / 2, 0), (ped_w, h / 2, d * 0.95), ~legged),
        box(m, (w - ped_w, h / 2, 0), (ped_w, h / 2, d * 0.95), two),
        cyl(m, (w * 0.92, h / 2, d * 0.85), 0.025, h / 2, 1, ~two),
        cyl(m, (w * 0.92, h / 2, -d * 0.85), 0.025, h / 2, 1, ~two),
        cyl(m, (-w * 0.92, h / 2, d * 0.85), 0.025, h / 2, 1, legged),
        cyl(m, (-w * 0.92, h / 2, -d * 0.85), 0.025, h / 2, 1, legged),
        box(m, (0, h * 0.6, -d * 0.9), (w * 0.9, h * 0.3, 0.015), g.random(m) < 0.5),
    ]


def _dresser(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, h, d, leg = U(0.4, 0.9), U(0.35, 0.65), U(0.22, 0.35), U(0.0, 0.08)
    fronts = [box(m, (0, leg + h * f * 2, d + 0.01), (w * 0.9, h * 0.14, 0.012), g.random(m) < 0.8)
              for f in (0.2, 0.5, 0.8)]
    return [box(m, (0, leg + h, 0), (w, h, d)), *_legs(m, w * 0.9, d * 0.85, leg + 0.01, leg + 0.01, 0.03), *fronts]


def _glass_box(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, h, d = U(0.4, 0.8), U(0.3, 0.8), U(0.3, 0.6)
    return _open_box(m, (0, h, 0), (w, h, d), U(0.01, 0.025), top=g.random(m) < 0.5, front=True)


def _keyboard(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, d, t = U(0.8, 1.0), U(0.22, 0.35), U(0.015, 0.035)
    rows = [box(m, (0, t * 2 + 0.005, d * f), (w * 0.9, 0.008, d * 0.12), g.random(m) < 0.9) for f in (-0.6, 0, 0.6)]
    return [box(m, (0, t, 0), (w, t, d)), *rows]


def _laptop(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, d, t, screen_h = U(0.45, 0.6), U(0.3, 0.42), U(0.012, 0.025), U(0.3, 0.42)
    return [
        box(m, (0, t, 0), (w, t, d)),
        box(m, (0, 2 * t + screen_h, -d + t), (w, screen_h, t)),
    ]


def _night_stand(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, h, d, leg = U(0.2, 0.4), U(0.22, 0.38), U(0.2, 0.3), U(0.03, 0.12)
    return [
        box(m, (0, leg + h, 0), (w, h, d)),
        *_legs(m, w * 0.85, d * 0.85, leg + 0.01, leg + 0.01, 0.025),
        box(m, (0, leg + h * 1.5, d + 0.01), (w * 0.85, h * 0.3, 0.012), g.random(m) < 0.8),
        box(m, (0, leg + h * 0.7, d + 0.01), (w * 0.85, h * 0.3, 0.012), g.random(m) < 0.5),
    ]


def _plant(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    pot_h, r0, r3, stem = U(0.2, 0.45), U(0.1, 0.22), U(0.14, 0.32), U(0.1, 0.6)
    top = pot_h + stem
    return [
        rev(m, (0, 0, 0), pot_h, (1 / 3, 2 / 3), (r0, r0 + (r3 - r0) / 3, r0 + 2 * (r3 - r0) / 3, r3)),
        cyl(m, (0, pot_h + stem / 2, 0), 0.025, stem / 2, 1),
        ell(m, (0, top, 0), (U(0.25, 0.45), U(0.2, 0.4), U(0.25, 0.45))),
        ell(m, (U(-0.25, 0.25), top + U(0.1, 0.3), U(-0.2, 0.2)), (U(0.15, 0.3), U(0.15, 0.3), U(0.15, 0.3)),
            g.random(m) < 0.7),
        ell(m, (U(-0.3, 0.3), top - U(0.0, 0.15), U(-0.25, 0.25)), (U(0.12, 0.25), U(0.1, 0.2), U(0.12, 0.25)),
            g.random(m) < 0.6),
    ]


def _radio(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, h, d = U(0.4, 0.6), U(0.2, 0.35), U(0.1, 0.18)
    two = g.random(m) < 0.6
    return [
        box(m, (0, h, 0), (w, h, d)),
        cyl(m, (-w * 0.5, h, d), h * 0.6, 0.015, 2),
        cyl(m, (w * 0.5, h, d), h * 0.6, 0.015, 2, two),
        cyl(m, (w * 0.7, 2 * h + 0.25, 0), 0.01, 0.25, 1, g.random(m) < 0.5),
        box(m, (0, 2 * h + 0.04, 0), (w * 0.6, 0.02, 0.02), g.random(m) < 0.5),
    ]


def _range_hood(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    r_bottom, h, chimney = U(0.35, 0.6), U(0.15, 0.3), U(0.3, 0.7)
    r_top = U(0.1, 0.18)
    return [
        rev(m, (0, 0, 0), h, (0.15, 0.6), (r_bottom, r_bottom * 0.95, r_top * 1.3, r_top),
            (r_bottom - 0.02, r_bottom * 0.95 - 0.02, 0, 0)),
        box(m, (0, h + chimney / 2, 0), (r_top * 0.9, chimney / 2, r_top * 0.9)),
    ]


def _sink(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    ped_h, ped_r = U(0.5, 0.7), U(0.06, 0.12)
    rim, bowl_h = U(0.3, 0.45), U(0.12, 0.2)
    return [
        cyl(m, (0, ped_h / 2, 0), ped_r, ped_h / 2, 1),
        rev(m, (0, ped_h, 0), bowl_h, (0.3, 0.7), (ped_r * 1.3, rim * 0.85, rim * 0.98, rim),
            (0, rim * 0.85 - 0.03, rim * 0.98 - 0.03, rim - 0.03)),
        cyl(m, (0, ped_h + bowl_h + 0.08, -rim * 0.9), 0.02, 0.08, 1, g.random(m) < 0.7),
    ]


def _tv_stand(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, h, d = U(0.8, 1.2), U(0.18, 0.32), U(0.2, 0.32)
    return [
        *_open_box(m, (0, h + 0.03, 0), (w, h, d), U(0.02, 0.04), top=True, front=False),
        box(m, (0, h + 0.03, 0), (0.02, h * 0.95, d * 0.95), g.random(m) < 0.5),
        *_legs(m, w * 0.9, d * 0.8, 0.03, 0.03, 0.025),
    ]


def _wardrobe(g: np.random.Generator, m: int) -> list[Part]:
    U = lambda lo, hi: g.uniform(lo, hi, m)  # noqa: E731
    w, h, d = U(0.45, 0.8), U(0.8, 1.2), U(0.25, 0.4)
    return [
        box(m, (0, h + 0.04, 0), (w, h, d)),
        box(m, (0, 2 * h + 0.06, 0), (w * 1.05, 0.03, d * 1.05), g.random(m) < 0.5),
        box(m, (0, 0.02, 0), (w * 0.95, 0.02, d * 0.95)),
        cyl(m, (-0.05, h, d + 0.02), 0.012, h * 0.15, 1, g.random(m) < 0.6),
        cyl(m, (0.05, h, d + 0.02), 0.012, h * 0.15, 1, g.random(m) < 0.6),
    ]


#: Class name -> recipe. Names follow ModelNet40's; order fixes the label ids.
CLASSES: dict[str, Callable[[np.random.Generator, int], list[Part]]] = {
    name: globals()[f"_{name}"]
    for name in (
        "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
        "cup", "desk", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop",
        "monitor", "night_stand", "person", "plant", "radio", "range_hood", "sink", "sofa", "stool",
        "table", "toilet", "tv_stand", "vase", "wardrobe",
    )
}
