"""``bench plot``: figures from the result tables (matplotlib).

    make_plots("results", "results/plots") -> [paths of the PNG files written]

Four kinds of figure, all PNG under the output folder:

- ``accuracy_<section>.png`` — per leaderboard section (dataset, protocol, victim, profile,
  n, seed): grouped bars of accuracy per attack (and clean) per defense, with the 95%
  Wilson interval as error bars; failed cells marked ``×``.
- ``curves_<section>.png`` — robust accuracy at every L2 budget per defense, from one
  minimum-norm attack (``fmn``) per cell (``benchmark.core.curves``), with each defense's median
  minimal distance in the legend.
- ``sweep_<key>_<section>.png`` — from ``bench run --sweep KEY=V1,V2,...``: accuracy vs the
  swept value, one line per defense (for an ``attacks.<name>.<field>`` sweep, the accuracy
  under that attack; otherwise the mean over attacks). Each sweep value's rows live in
  ``<results>/sweeps/<KEY>/<value>/`` (see :func:`sweep_out_dir`); the x value is read back
  from the rows' ``attack_params`` / ``defense_params`` where the key names one of them.
- ``examples_<dataset>_<victim>_<profile>_<attack>.png`` — clean vs adversarial clouds of
  the first few test samples, read from the adversarial-example cache (``transfer`` rows:
  the examples crafted against the victim). Attacks whose entry is not in the cache are
  skipped with a note; nothing is re-crafted.
"""
from __future__ import annotations

import json
import math
import os
import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.leaderboard import Section, read_runs, sections
from benchmark.store import CLEAN, ResultStore, wilson_interval, with_labels

__all__ = [
    "SWEEP_DIR",
    "MissingExtraError",
    "make_plots",
    "parse_sweep",
    "plot_accuracy_bars",
    "plot_examples",
    "plot_robustness_curves",
    "plot_sweeps",
    "read_sweeps",
    "sweep_out_dir",
]

#: Sub-folder of a results folder that holds the rows of ``--sweep`` runs.
SWEEP_DIR = "sweeps"

INSTALL_HINT = "pip install 'pcrb[plots]'"


class MissingExtraError(ImportError):
    """An optional dependency (matplotlib) is not installed; the message names the install command."""


# ---------------------------------------------------------------------------------------------
# sweeps: where their rows go
# ---------------------------------------------------------------------------------------------
def parse_sweep(spec: str) -> tuple[str, list[str]]:
    """``"attacks.pgd.budget=0.02,0.04"`` -> ``("attacks.pgd.budget", ["0.02", "0.04"])``.

    Values are kept as written (each becomes one ``--set KEY=VALUE``). Raises ``ValueError``
    naming the expected form when ``spec`` is malformed.
    """
    key, sep, raw = spec.partition("=")
    key = key.strip()
    values = [v.strip() for v in raw.split(",")]
    if not sep or not key or any(not p for p in key.split(".")) or not raw.strip() or any(not v for v in values):
        raise ValueError(f"--sweep expects dotted.key=V1,V2,... (e.g. attacks.pgd.budget=0.02,0.04); got {spec!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"--sweep {key}: repeated value in {raw!r}")
    return key, values


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._+=-]+", "_", str(text)).strip("_")
    return "_" if slug in ("", ".", "..") else slug


def sweep_out_dir(out_dir: str | os.PathLike[str], key: str, value: str) -> Path:
    """The results folder of one sweep point: ``<out_dir>/sweeps/<key>/<value>``."""
    return Path(out_dir) / SWEEP_DIR / _slug(key) / _slug(value)


def _number(value: Any) -> Any:
    from benchmark.core.config import load_yaml

    if isinstance(value, str):
        try:
            value = load_yaml(value)
        except ValueError:
            return value
    return value


def _recorded_value(row: pd.Series, key: str) -> Any:
    """The swept parameter's value as the row records it (attack/defense params), else None."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] in ("attacks", "defenses"):
        kind = "attack" if parts[0] == "attacks" else "defense"
        if row.get(kind) != parts[1]:
            return None
        try:
            params = json.loads(row.get(f"{kind}_params") or "{}")
        except ValueError:
            return None
        return params.get(parts[2])
    return None


def read_sweeps(results_dir: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """Rows of every sweep under ``<results_dir>/sweeps``, by key, with a ``sweep_value`` column
    (the recorded parameter where the rows hold it, else the folder's value parsed as YAML)."""
    root = Path(results_dir) / SWEEP_DIR
    out: dict[str, pd.DataFrame] = {}
    if not root.is_dir():
        return out
    for key_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        frames = []
        for value_dir in sorted(p for p in key_dir.iterdir() if p.is_dir()):
            frame = ResultStore(value_dir).read()
            if frame.empty:
                continue
            fallback = _number(value_dir.name)
            values = [_recorded_value(r, key_dir.name) for _, r in frame.iterrows()]
            recorded = [v for v in values if v is not None]
            frame["sweep_value"] = recorded[0] if recorded else fallback
            frames.append(frame)
        if frames:
            out[key_dir.name] = pd.concat(frames, ignore_index=True)
    return out


# ---------------------------------------------------------------------------------------------
# matplotlib
# ---------------------------------------------------------------------------------------------
def _figure(**kwargs: Any) -> Any:
    """A matplotlib ``Figure`` (object API, no pyplot state, Agg canvas)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise MissingExtraError(f"plots need matplotlib, an optional extra: {INSTALL_HINT}") from err
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def require_matplotlib() -> None:
    """Raise :class:`MissingExtraError` (naming ``pip install 'pcrb[plots]'``) without matplotlib."""
    _figure()


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata={"Software": None})
    return path


def _section_slug(section: Section) -> str:
    parts = [section.dataset, section.protocol] + ([section.surrogate] if section.surrogate else []) + [
        section.victim, section.profile, f"n{section.n}", f"seed{section.seed}"]
    return _slug("_".join(parts))


def _defense_order(defenses: Sequence[str]) -> list[str]:
    names = sorted(set(defenses))
    return (["none"] if "none" in names else []) + [d for d in names if d != "none"]


def _ci(row: pd.Series) -> tuple[float, float, float]:
    """(accuracy, low, high) in percent from correct / n (Wilson), else the stored columns."""
    n, k = row.get("n"), row.get("correct")
    if pd.notna(n) and pd.notna(k) and int(n) > 0:
        low, high = wilson_interval(int(k), int(n))
        return 100 * int(k) / int(n), 100 * low, 100 * high
    acc = float(row.get("accuracy", math.nan))
    return 100 * acc, 100 * float(row.get("ci_low", acc)), 100 * float(row.get("ci_high", acc))


# ---------------------------------------------------------------------------------------------
# (a) grouped bars
# ---------------------------------------------------------------------------------------------
def plot_accuracy_bars(frame: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[Path]:
    """One grouped bar chart per leaderboard section of ``frame``; returns the files written."""
    written = []
    for section, rows in sections(with_labels(frame)).items():  # a variant is its own bar, labelled
        attacks = [CLEAN] * bool((rows["attack"] == CLEAN).any()) + sorted({a for a in rows["attack"] if a != CLEAN})
        defenses = _defense_order(rows["defense"])
        fig = _figure(figsize=(max(6.0, 1.1 * len(attacks) * max(1, len(defenses)) ** 0.5 + 2), 4.2))
        ax = fig.add_subplot()
        width = 0.8 / max(1, len(defenses))
        x = np.arange(len(attacks))
        for j, defense in enumerate(defenses):
            heights, lows, highs, failed = [], [], [], []
            for i, attack in enumerate(attacks):
                match = rows[(rows["attack"] == attack) & (rows["defense"] == defense)]
                if match.empty or match.iloc[-1]["status"] != "ok":
                    acc = low = high = 0.0
                    if not match.empty:
                        failed.append(i)
                else:
                    acc, low, high = _ci(match.iloc[-1])
                heights.append(acc)
                lows.append(max(0.0, acc - low))
                highs.append(max(0.0, high - acc))
            pos = x - 0.4 + width * (j + 0.5)
            ax.bar(pos, heights, width, yerr=[lows, highs], capsize=2, label=defense, error_kw={"linewidth": 0.8})
            for i in failed:
                ax.text(pos[i], 2, "×", ha="center", va="bottom", color="red", fontsize=9)
        ax.set_xticks(x, attacks, rotation=30 if len(attacks) > 5 else 0, ha="right" if len(attacks) > 5 else "center")
        ax.set_ylabel("accuracy (%) ± 95% Wilson CI")
        ax.set_ylim(0, 105)
        ax.set_title(section.title(), fontsize=9)
        ax.legend(fontsize=8, ncols=min(4, len(defenses)), loc="upper right")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        written.append(_save(fig, Path(out_dir) / f"accuracy_{_section_slug(section)}.png"))
    return written


# ---------------------------------------------------------------------------------------------
# (b) robustness curves from the minimum-norm attack
# ---------------------------------------------------------------------------------------------
def plot_robustness_curves(frame: pd.DataFrame, out_dir: str | os.PathLike[str], points: int = 200) -> list[Path]:
    """Robust accuracy vs L2 budget per defense, from the minimum-norm attack's rows
    (``benchmark.core.curves``): one figure per leaderboard section that has them."""
    from benchmark.core.curves import median_distance, robust_accuracy_curve
    from benchmark.store import GROUP_COLUMNS, min_norm_distances

    written = []
    at = GROUP_COLUMNS.index("defense")
    for section, rows in sections(with_labels(frame)).items():
        curves = {k[at]: v for k, v in min_norm_distances(rows).items()}
        if not curves:
            continue
        finite = np.concatenate([v[np.isfinite(v)] for v in curves.values()])
        top = float(np.quantile(finite, 0.98)) * 1.1 if finite.size else 1.0
        budgets = np.linspace(0.0, max(top, 1e-6), points)
        fig = _figure(figsize=(6.0, 4.2))
        ax = fig.add_subplot()
        for defense in _defense_order(list(curves)):
            effective = curves[defense]
            median = median_distance(effective)
            label = f"{defense} (median {'∞' if math.isinf(median) else f'{median:.3f}'})"
            ax.plot(budgets, 100 * robust_accuracy_curve(effective, budgets), label=label, drawstyle="steps-post")
        ax.axhline(50, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xlabel("L2 budget over all coordinates (cloud units)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(0, 105)
        ax.set_xlim(0, budgets[-1])
        title = "\n".join(textwrap.wrap(section.title(), 72))
        ax.set_title(title + "\nfrom the minimum-norm attack (one run)", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(_save(fig, Path(out_dir) / f"curves_{_section_slug(section)}.png"))
    return written


# ---------------------------------------------------------------------------------------------
# (c) sweeps
# ---------------------------------------------------------------------------------------------
def plot_sweeps(results_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Accuracy vs swept value per defense, one figure per (sweep key, section); files written."""
    written = []
    for key, frame in read_sweeps(results_dir).items():
        parts = key.split(".")
        attack = parts[1] if len(parts) == 3 and parts[0] == "attacks" else None
        for section, rows in sections(frame).items():
            rows = rows[rows["status"] == "ok"]
            if attack is not None:
                rows = rows[rows["attack"] == attack]
                ylabel = f"accuracy under {attack} (%) ± 95% Wilson CI"
            else:
                rows = rows[rows["attack"] != CLEAN]
                ylabel = "mean accuracy over attacks (%)"
            if rows.empty:
                continue
            values = sorted(set(rows["sweep_value"]), key=lambda v: (not isinstance(v, (int, float)), v if
                                                                      isinstance(v, (int, float)) else str(v)))
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            position = {v: (float(v) if numeric else float(i)) for i, v in enumerate(values)}
            fig = _figure(figsize=(6.0, 4.2))
            ax = fig.add_subplot()
            order = _defense_order(rows["defense"])
            span = (max(position.values()) - min(position.values())) or 1.0
            for j, defense in enumerate(order):
                dodge = (j - (len(order) - 1) / 2) * 0.012 * span  # overlapping curves stay visible
                mine = rows[rows["defense"] == defense]
                xs, ys, lo, hi = [], [], [], []
                for value in values:
                    at = mine[mine["sweep_value"] == value]
                    if at.empty:
                        continue
                    if attack is not None:
                        acc, low, high = _ci(at.iloc[-1])
                    else:
                        acc = 100 * float(at["accuracy"].mean())
                        low = high = acc
                    xs.append(position[value] + dodge)
                    ys.append(acc)
                    lo.append(acc - low)
                    hi.append(high - acc)
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=defense)
            if not numeric:
                ax.set_xticks([position[v] for v in values], [str(v) for v in values])
            ax.set_xlabel(key)
            ax.set_ylabel(ylabel)
            ax.set_ylim(0, 105)
            ax.set_title(section.title(), fontsize=9)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            name = f"sweep_{_slug(key)}_{_section_slug(section)}.png"
            written.append(_save(fig, Path(out_dir) / name))
    return written


# ---------------------------------------------------------------------------------------------
# (d) clean vs adversarial clouds
# ---------------------------------------------------------------------------------------------
def _scatter(ax: Any, points: np.ndarray, colour: Any, title: str) -> None:
    # the clouds are y-up (SynthShapes, ModelNet): draw y as the vertical axis
    ax.scatter(points[:, 0], points[:, 2], points[:, 1], s=1.5, c=colour, depthshade=False, linewidths=0)
    ax.set_title(title, fontsize=8)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_ticklabels([])
    lim = 1.0
    ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_zlim(-lim, lim)
    ax.view_init(elev=20, azim=-60)


def plot_examples(results_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                  cache_dir: str | os.PathLike[str] | None = None, samples: int = 3,
                  log: Callable[[str], None] = print) -> list[Path]:
    """Clean vs adversarial clouds of the first ``samples`` test clouds per attack of every
    ``transfer`` section, read from the adversarial cache; returns the files written and
    ``log``s one line per attack it had to skip (and why)."""
    from attacks.crafting import crafting_key, entry_for
    from attacks.factory import attack_spec
    from benchmark.core.cache import CorruptCacheError, load_arrays, resolve_cache_dir
    from benchmark.core.registry import populate_registries
    from benchmark.core.data import load_dataset

    populate_registries()
    cache = resolve_cache_dir(cache_dir)
    runs = read_runs(results_dir)
    frame = ResultStore(results_dir).read()
    frame = frame[(frame["protocol"] == "transfer") & (frame["status"] == "ok") & (frame["attack"] != CLEAN)]
    written: list[Path] = []
    done: set[tuple[str, ...]] = set()
    for _, row in frame.sort_values(["dataset", "victim", "profile", "attack", "seed", "n"], kind="stable").iterrows():
        what = (row["dataset"], row["victim"], row["profile"], row["attack"])
        if what in done:
            continue
        meta = next((runs[r] for r in str(row["run_id"]).split("+") if r in runs), None)
        if meta is None or meta.get("shard", [0, 1])[1] != 1:
            continue  # need the run's dataset settings; shard rows hold other subsets
        config = meta["config"]
        try:
            data = config["dataset"]
            test = load_dataset(data["name"], "test", root=data.get("root"), num_points=data["num_points"],
                                sampling=data["sampling"], normalize=data["normalize"], seed=config["seed"],
                                cache_dir=cache, options=(config.get("datasets") or {}).get(data["name"]))
            if test.fingerprint != row["dataset_fingerprint"]:
                log(f"examples: {row['dataset']} fingerprint {test.fingerprint} differs from the rows'; skipped")
                continue
            n = int(row["n"])
            attack = attack_spec(row["attack"], json.loads(row["attack_params"]))
            key = crafting_key(attack, model_hash=str(row["victim_hash"]), dataset_fingerprint=test.fingerprint,
                               split="test", subset=list(range(n)), name=row["attack"])
            arrays = load_arrays(entry_for(cache, attack, key))
        except (FileNotFoundError, CorruptCacheError) as err:
            log(f"examples: no usable cached examples of {row['attack']} on {row['victim']} in {cache} ({type(err).__name__}); "
                f"rerun the `bench run` of the leaderboard with this cache dir, or pass --cache-dir")
            continue
        except Exception as err:  # noqa: BLE001 - one attack's figure must not stop the others
            log(f"examples: {row['attack']}: {type(err).__name__}: {err}; skipped")
            continue
        done.add(what)
        k = min(samples, n)
        fig = _figure(figsize=(2.6 * k, 5.4))
        names = test.class_names
        for j in range(k):
            label = int(test.labels[j])
            clean = test.points[j]
            adv = arrays["points"][j]
            _scatter(fig.add_subplot(2, k, j + 1, projection="3d"), clean, "tab:blue", f"clean: {names[label]}")
            pred = int(arrays["pred"][j])
            verdict = "fooled" if bool(arrays["success"][j]) else "resisted"
            colour: Any = "tab:red"
            if adv.shape == clean.shape:  # colour by displacement when points correspond
                colour = np.linalg.norm(adv - clean, axis=1)
            _scatter(fig.add_subplot(2, k, k + j + 1, projection="3d"), adv, colour,
                     f"{row['attack']}: {names[pred]} ({verdict})\n{adv.shape[0]} points")
        fig.suptitle(f"{row['dataset']} · {row['attack']} against {row['victim']} · profile {row['profile']}", fontsize=9)
        fig.tight_layout()
        name = f"examples_{_slug(row['dataset'])}_{_slug(row['victim'])}_{_slug(row['profile'])}_{_slug(row['attack'])}.png"
        written.append(_save(fig, Path(out_dir) / name))
    return written


def make_plots(results_dir: str | os.PathLike[str] = "results", out_dir: str | os.PathLike[str] | None = None,
               cache_dir: str | os.PathLike[str] | None = None, samples: int = 3,
               log: Callable[[str], None] = print) -> list[Path]:
    """Every figure (bars, sweeps, examples) of ``results_dir`` under ``out_dir`` (default
    ``<results_dir>/plots``); returns the PNG files written. Raises :class:`MissingExtraError`
    without matplotlib and ``FileNotFoundError`` without a results folder."""
    require_matplotlib()
    results = Path(results_dir)
    if not results.is_dir():
        raise FileNotFoundError(f"results folder '{results}' does not exist; run `bench run` first or pass --results DIR")
    out = Path(out_dir) if out_dir is not None else results / "plots"
    frame = ResultStore(results).read()
    written = plot_accuracy_bars(frame, out)
    written += plot_robustness_curves(frame, out)
    written += plot_sweeps(results, out)
    if samples > 0:
        written += plot_examples(results, out, cache_dir=cache_dir, samples=samples, log=log)
    return written
