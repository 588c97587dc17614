"""``bench merge``: combine the shard rows of several results folders into the rows one process
would have written (``benchmark.distributed.shards``), in one results store.

A row's shard and batch size come from its columns when the store has them, else from its
run record (``runs/<run_id>.json``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.core.config import config_hash
from benchmark.distributed.shards import MergeError, ShardInfo, cell_name, finite, merge_shard_rows
from benchmark.store import ResultStore

__all__ = ["merge_results"]


def _parse_shard_text(text: Any) -> tuple[int, int] | None:
    if isinstance(text, str) and "/" in text:
        i, k = text.split("/", 1)
        return int(i), int(k)
    return None


def _shard_of(row: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]], where: Path) -> ShardInfo:
    """A row's shard: its ``shard``/``batch_size`` columns when the store has them, else its run record."""
    from_column = _parse_shard_text(row.get("shard"))
    batch = row.get("batch_size")
    meta = runs.get(str(row.get("run_id")))
    if from_column is not None and finite(batch):
        return ShardInfo(from_column[0], from_column[1], int(batch))
    if "shard" in row and not row.get("shard") and finite(batch):
        return ShardInfo(0, 1, int(batch))
    if meta is None:
        raise MergeError(f"row {cell_name(row)} of {where} names run {row.get('run_id')!r}, whose record "
                         f"{where / 'runs' / (str(row.get('run_id')) + '.json')} is missing; it says which shard "
                         "the row holds: copy each shard's runs/ folder along with its CSV")
    index, count = (int(v) for v in meta.get("shard", [0, 1]))
    return ShardInfo(index, count, int(meta["config"]["batch_size"]))


def merge_results(result_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``bench merge``: combine the shard rows of ``result_dirs`` into single-process rows in
    ``out_dir`` (its results store; existing rows with the same key are replaced). The run
    records of every merged row are copied to ``out_dir/runs`` with a ``merge-<hash>.json``
    record naming the sources. Returns the merged rows."""
    rows: list[dict[str, Any]] = []
    shards: list[ShardInfo] = []
    metas: dict[str, Mapping[str, Any]] = {}
    sources: dict[str, list[str]] = {}
    for folder in result_dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"results folder '{folder}' does not exist")
        runs = ResultStore(folder).read_runs()
        frame = ResultStore(folder).read()
        if frame.empty:
            raise MergeError(f"results folder '{folder}' holds no result rows (*.csv)")
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
        for row in records:
            shards.append(_shard_of(row, runs, folder))
            rows.append(row)
            if str(row.get("run_id")) in runs:
                metas[str(row["run_id"])] = runs[str(row["run_id"])]
        sources[str(folder)] = sorted({str(r.get("run_id")) for r in records})
    merged = merge_shard_rows(rows, shards)
    store = ResultStore(out_dir)
    store.write(merged)
    for run_id in sorted(metas):
        store.write_run(run_id, metas[run_id])
    record = {"merged_from": sources, "rows": len(merged),
              "run_ids": sorted({r for ids in sources.values() for r in ids})}
    merge_id = f"merge-{config_hash(record['run_ids'])}"
    store.write_run(merge_id, {"run_id": merge_id, **record})
    return pd.DataFrame(merged)
