"""``bench plot``: figures from the result tables (matplotlib).

    make_plots("results", "results/plots") -> [paths of the PNG files written]

Four kinds of figure, all PNG under the output folder, one module each:

- ``accuracy_<section>.png`` (``bars``) — per leaderboard section (dataset, protocol, victim,
  profile, n, seed): grouped bars of accuracy per attack (and clean) per defense, with the 95%
  Wilson interval as error bars; failed cells marked ``×``.
- ``curves_<section>.png`` (``curves``) — robust accuracy at every L2 budget per defense, from
  one minimum-norm attack (``fmn``) per cell (``benchmark.core.curves``), with each defense's
  median minimal distance in the legend.
- ``sweep_<key>_<section>.png`` (``sweeps``) — from ``bench run --sweep KEY=V1,V2,...``:
  accuracy vs the swept value, one line per defense (for an ``attacks.<name>.<field>`` sweep,
  the accuracy under that attack; otherwise the mean over attacks). Each sweep value's rows
  live in ``<results>/sweeps/<KEY>/<value>/`` (see :func:`sweep_out_dir`); the x value is read
  back from the rows' ``attack_params`` / ``defense_params`` where the key names one of them.
- ``examples_<dataset>_<victim>_<profile>_<attack>.png`` (``examples``) — clean vs adversarial
  clouds of the first few test samples, read from the adversarial-example cache (``transfer``
  rows: the examples crafted against the victim). Attacks whose entry is not in the cache are
  skipped with a note; nothing is re-crafted.

What they share (the matplotlib figure, file names, defense order) is in ``figure``. Every
name is importable from ``benchmark.plots`` itself.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from benchmark.plots.bars import plot_accuracy_bars
from benchmark.plots.curves import plot_robustness_curves
from benchmark.plots.examples import plot_examples
from benchmark.plots.figure import INSTALL_HINT, MissingExtraError, require_matplotlib
from benchmark.plots.sweeps import SWEEP_DIR, parse_sweep, plot_sweeps, read_sweeps, sweep_out_dir
from benchmark.store import ResultStore

__all__ = [
    "INSTALL_HINT",
    "SWEEP_DIR",
    "MissingExtraError",
    "make_plots",
    "parse_sweep",
    "plot_accuracy_bars",
    "plot_examples",
    "plot_robustness_curves",
    "plot_sweeps",
    "read_sweeps",
    "require_matplotlib",
    "sweep_out_dir",
]


def make_plots(results_dir: str | os.PathLike[str] = "results", out_dir: str | os.PathLike[str] | None = None,
               cache_dir: str | os.PathLike[str] | None = None, samples: int = 3,
               log: Callable[[str], None] = print) -> list[Path]:
    """Every figure (bars, curves, sweeps, examples) of ``results_dir`` under ``out_dir`` (default
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
