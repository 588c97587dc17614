"""``ResultStore``: the rows of a results folder (``<out_dir>/<dataset>.csv``) and its run records
(``<out_dir>/runs/<run-id>.json``); idempotent, atomic and resumable as :mod:`benchmark.store` says."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.store.columns import COLUMNS, KEY_COLUMNS, normalise, sort_rows
from benchmark.store.files import atomic_write_text, locked, remove_stale_temps, safe_name

__all__ = ["ResultStore"]


class ResultStore:
    """Rows of results under ``out_dir`` (one CSV per dataset)."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)

    def csv_path(self, dataset: str) -> Path:
        return self.out_dir / f"{safe_name(dataset, 'dataset name')}.csv"

    def read(self, dataset: str | None = None) -> pd.DataFrame:
        """All rows (of one dataset, or of every ``*.csv`` under ``out_dir``), sorted by key."""
        paths = [self.csv_path(dataset)] if dataset else sorted(self.out_dir.glob("*.csv"))
        frames = []
        for path in paths:
            if not path.exists():
                continue
            try:
                frames.append(pd.read_csv(path, dtype={"outcomes": str, "distances": str, "error": str, "git_commit": str,
                                                       "attack_role": str},
                                          keep_default_na=False, na_values=[""]))
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
                raise ValueError(f"results file {path} is not a readable CSV ({err}); move it away and rerun") from err
        if not frames:
            return normalise(pd.DataFrame(columns=list(COLUMNS)))
        return sort_rows(normalise(pd.concat(frames, ignore_index=True)))

    def write(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Insert or replace ``rows`` (by :data:`KEY_COLUMNS`), atomically, under a file lock.

        Returns:
            The stored rows that were replaced (same key: the same cell with identical
            parameters), ``[]`` when every row was new.
        """
        new = pd.DataFrame([dict(r) for r in rows])
        if new.empty:
            return []
        replaced: list[dict[str, Any]] = []
        for dataset, part in new.groupby("dataset", sort=True):
            path = self.csv_path(str(dataset))
            with locked(path.parent / f".{path.name}.lock"):
                old = self.read(str(dataset))
                part = normalise(part.copy())
                if not old.empty:
                    keys = set(map(tuple, part[list(KEY_COLUMNS)].astype(str).to_numpy().tolist()))
                    hit = [tuple(k) in keys for k in old[list(KEY_COLUMNS)].astype(str).to_numpy().tolist()]
                    replaced += old[hit].to_dict("records")
                merged = normalise(pd.concat([old, part], ignore_index=True))
                merged = merged.drop_duplicates(list(KEY_COLUMNS), keep="last")
                remove_stale_temps(path)
                atomic_write_text(path, sort_rows(merged).to_csv(index=False, float_format="%.6g"))
        return replaced

    def finished(self, key: Mapping[str, Any], cell_hash: str) -> dict[str, Any] | None:
        """The stored row of the cell ``key`` when it finished with the same ``cell_hash``."""
        frame = self.read(str(key["dataset"]))
        if frame.empty:
            return None
        match = np.ones(len(frame), dtype=bool)
        for column in KEY_COLUMNS:
            value = key.get(column, "")
            match &= (frame[column].astype(str) == str(value)).to_numpy()
        rows = frame[match & (frame["cell_hash"] == cell_hash).to_numpy() & (frame["status"] == "ok").to_numpy()]
        return None if rows.empty else rows.iloc[-1].to_dict()

    def read_runs(self) -> dict[str, dict[str, Any]]:
        """Run metadata by run id (``runs/*.json``); unreadable files are skipped."""
        out = {}
        for path in sorted((self.out_dir / "runs").glob("*.json")):
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict):
                out[str(meta.get("run_id") or path.stem)] = meta
        return out

    def write_run(self, run_id: str, meta: Mapping[str, Any]) -> Path:
        """Run metadata (resolved config, versions, environment) to ``runs/<run_id>.json``."""
        path = self.out_dir / "runs" / f"{safe_name(run_id, 'run id')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        return path
