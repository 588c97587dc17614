"""``examples_<dataset>_<victim>_<profile>_<attack>.png``: clean vs adversarial clouds of the
first few test samples, read from the adversarial-example cache (``transfer`` rows: the
examples crafted against the victim). Attacks whose entry is not in the cache are skipped
with a note; nothing is re-crafted.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.leaderboard.sections import read_runs
from benchmark.plots.figure import figure, save, slug
from benchmark.store import CLEAN, ResultStore

__all__ = ["plot_examples"]


def _scatter(ax: Any, points: np.ndarray, colour: Any, title: str) -> None:
    # the clouds are y-up (SynthShapes, ModelNet): draw y as the vertical axis
    ax.scatter(points[:, 0], points[:, 2], points[:, 1], s=1.5, c=colour, depthshade=False, linewidths=0)
    ax.set_title(title, fontsize=8)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_ticklabels([])
    lim = 1.0
    ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_zlim(-lim, lim)
    ax.view_init(elev=20, azim=-60)


def _cached_examples(row: pd.Series, config: Mapping[str, Any], cache: Path,
                     log: Callable[[str], None]) -> tuple[Any, Mapping[str, np.ndarray]] | None:
    """The test split ``row`` was computed on (loaded with its run's ``config``) and the cached
    adversarial examples of its attack; None, after ``log``ging why, when either is not there."""
    from attacks.crafting import crafting_key, entry_for
    from attacks.factory import attack_spec
    from benchmark.core.cache import CorruptCacheError, load_arrays
    from benchmark.core.data import load_dataset

    try:
        data = config["dataset"]
        test = load_dataset(data["name"], "test", root=data.get("root"), num_points=data["num_points"],
                            sampling=data["sampling"], normalize=data["normalize"], seed=config["seed"],
                            cache_dir=cache, options=(config.get("datasets") or {}).get(data["name"]))
        if test.fingerprint != row["dataset_fingerprint"]:
            log(f"examples: {row['dataset']} fingerprint {test.fingerprint} differs from the rows'; skipped")
            return None
        attack = attack_spec(row["attack"], json.loads(row["attack_params"]))
        key = crafting_key(attack, model_hash=str(row["victim_hash"]), dataset_fingerprint=test.fingerprint,
                           split="test", subset=list(range(int(row["n"]))), name=row["attack"])
        return test, load_arrays(entry_for(cache, attack, key))
    except (FileNotFoundError, CorruptCacheError) as err:
        log(f"examples: no usable cached examples of {row['attack']} on {row['victim']} in {cache} ({type(err).__name__}); "
            f"rerun the `bench run` of the leaderboard with this cache dir, or pass --cache-dir")
    except Exception as err:  # noqa: BLE001 - one attack's figure must not stop the others
        log(f"examples: {row['attack']}: {type(err).__name__}: {err}; skipped")
    return None


def _examples_figure(row: pd.Series, test: Any, arrays: Mapping[str, np.ndarray], k: int) -> Any:
    """The first ``k`` clouds of ``test``, clean above, adversarial below (coloured by displacement)."""
    fig = figure(figsize=(2.6 * k, 5.4))
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
    return fig


def plot_examples(results_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                  cache_dir: str | os.PathLike[str] | None = None, samples: int = 3,
                  log: Callable[[str], None] = print) -> list[Path]:
    """Clean vs adversarial clouds of the first ``samples`` test clouds per attack of every
    ``transfer`` section, read from the adversarial cache; returns the files written and
    ``log``s one line per attack it had to skip (and why)."""
    from benchmark.core.cache import resolve_cache_dir
    from benchmark.core.registry import populate_registries

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
        loaded = _cached_examples(row, meta["config"], cache, log)
        if loaded is None:
            continue
        done.add(what)
        fig = _examples_figure(row, *loaded, min(samples, int(row["n"])))
        name = f"examples_{slug(row['dataset'])}_{slug(row['victim'])}_{slug(row['profile'])}_{slug(row['attack'])}.png"
        written.append(save(fig, Path(out_dir) / name))
    return written
