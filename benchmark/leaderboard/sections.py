"""The leaderboard's sections: which result rows are ranked together, and the run records
behind them.

One section per (dataset, profile, victim, protocol, seed, n) — and surrogate for the
``blackbox`` protocol — in a fixed order (by dataset, profile, victim, then protocol in
:data:`PROTOCOL_ORDER`), so the markdown, the HTML page and the plots list them alike.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from benchmark.leaderboard.cells import finite
from benchmark.store import CLEAN, ResultStore

__all__ = ["PROTOCOL_ORDER", "PROTOCOL_TEXT", "Section", "read_runs", "section_runs", "section_shards", "sections"]

PROTOCOL_ORDER = ("transfer", "blackbox", "adaptive")

PROTOCOL_TEXT = {
    "transfer": "adversarial examples crafted once per attack against the undefended victim `{victim}`, "
                "then classified by each defended model (the MRPD paper's protocol)",
    "blackbox": "adversarial examples crafted against the surrogate `{surrogate}`, then classified by each "
                "defended victim",
    "adaptive": "adversarial examples crafted against each defended model end to end (exact gradients, BPDA "
                "through non-differentiable preprocessing, EOT over randomised defenses)",
}


def read_runs(results_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The run records under ``<results_dir>/runs/*.json``, by run id (``ResultStore.read_runs``)."""
    return ResultStore(results_dir).read_runs()


@dataclass(frozen=True)
class Section:
    """One leaderboard section: the rows ranked together (``surrogate`` is ``""`` but for blackbox)."""

    dataset: str
    profile: str
    victim: str
    protocol: str
    seed: int
    n: int
    surrogate: str  # blackbox only

    def sort_key(self) -> tuple[Any, ...]:
        p = PROTOCOL_ORDER.index(self.protocol) if self.protocol in PROTOCOL_ORDER else 99
        return (self.dataset, self.profile, self.victim, p, self.protocol, self.seed, self.n, self.surrogate)

    def title(self) -> str:
        parts = [self.dataset, self.protocol] + ([f"surrogate {self.surrogate}"] if self.surrogate else []) + [
            f"victim {self.victim}", f"profile {self.profile}", f"n={self.n}", f"seed {self.seed}"]
        return " · ".join(parts)


def sections(frame: pd.DataFrame) -> dict[Section, pd.DataFrame]:
    """Rows per section; a blackbox section per surrogate, each with the clean rows."""
    out: dict[Section, pd.DataFrame] = {}
    base_cols = ["dataset", "profile", "victim", "protocol", "seed", "n"]
    for values, part in frame.groupby(base_cols, sort=True, dropna=False):
        dataset, profile, victim, protocol, seed, n = values
        surrogates = [""]
        if protocol == "blackbox":
            surrogates = sorted({str(s) for s in part.loc[part["attack"] != CLEAN, "source"]}) or [""]
        for surrogate in surrogates:
            rows = part if not surrogate else part[(part["attack"] == CLEAN) | (part["source"] == surrogate)]
            section = Section(str(dataset), str(profile), str(victim), str(protocol),
                              int(seed) if finite(seed) else 0, int(n) if finite(n) else 0, surrogate)
            out[section] = rows
    return dict(sorted(out.items(), key=lambda kv: kv[0].sort_key()))


def section_runs(rows: pd.DataFrame, runs: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The run records (of ``runs``, by id) that wrote ``rows``, by run id; merged rows name
    several runs (``"a+b"``); ids without a record are left out."""
    ids = sorted({r for value in rows["run_id"] if isinstance(value, str) for r in value.split("+") if r})
    return [runs[i] for i in ids if i in runs]


def section_shards(metas: list[Mapping[str, Any]]) -> list[str]:
    """``"i/K"`` of every run record in ``metas`` that ran one shard of a sharded run, sorted."""
    return sorted({f"{m['shard'][0]}/{m['shard'][1]}" for m in metas
                   if isinstance(m.get("shard"), list) and len(m["shard"]) == 2 and int(m["shard"][1]) > 1})
