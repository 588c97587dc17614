"""Shards of a run, and merging their rows into the row one process would have written.

A shard ``i/K`` of a run evaluates whole batches ``i, i+K, i+2K, ...`` (of ``batch_size``
clouds) of the test subset (``Runner(shard=(i, K))``), so randomised defenses draw per
batch exactly what one process draws. Merging the K shard rows of a cell therefore gives
the single-process row: summed ``correct``, recomputed accuracy and Wilson interval,
per-sample ``outcomes`` put back into the subset's order, sample-weighted attack success
and distances. Pure: rows in, rows out.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.config import config_hash
from benchmark.store import (
    KEY_COLUMNS,
    decode_distances,
    decode_outcomes,
    encode_distances,
    encode_outcomes,
    wilson_interval,
)

__all__ = ["MergeError", "ShardInfo", "cell_name", "finite", "merge_shard_rows", "shard_positions"]

#: Key columns that differ between the shards of one cell.
_SHARD_VARYING = ("n", "shard")

class MergeError(ValueError):
    """Shard rows that cannot be merged (missing shard, inconsistent sizes, unknown shard)."""


@dataclass(frozen=True)
class ShardInfo:
    """Which part of the test subset a row covers: shard ``index`` of ``count``, batches of ``batch_size``."""

    index: int
    count: int
    batch_size: int


#: One shard's row of a cell, with the shard it covers.
Part = tuple[Mapping[str, Any], ShardInfo]


def shard_positions(total: int, batch_size: int, index: int, count: int) -> np.ndarray:
    """Positions (in the subset of ``total`` clouds) that shard ``index/count`` holds, in its order:
    batches ``index, index+count, ...`` of ``batch_size`` consecutive clouds (as ``Runner`` picks them)."""
    starts = list(range(0, total, batch_size))[index::count]
    if not starts:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(s, min(s + batch_size, total)) for s in starts])


def finite(value: Any) -> bool:
    """True when ``value`` is a finite number (not None, NaN, inf or text)."""
    try:
        return value is not None and not pd.isna(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def cell_name(row: Mapping[str, Any]) -> str:
    """``dataset/protocol/defense/attack`` of a row, for messages."""
    return "/".join(str(row.get(c, "")) for c in ("dataset", "protocol", "defense", "attack"))


def _weighted_mean(values: Sequence[Any], weights: Sequence[int]) -> float:
    pairs = [(float(v), w) for v, w in zip(values, weights) if finite(v)]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else math.nan


def _check_parts(parts: list[Part], sizes: list[int], name: str) -> None:
    """Raise :class:`MergeError` unless the parts are shards of one run of one cell: each holds as
    many clouds as its shard of the total, and they agree on parameters, data, victim and config."""
    count, batch, total = parts[0][1].count, parts[0][1].batch_size, sum(sizes)
    for (_row, info), size in zip(parts, sizes):
        expected = len(shard_positions(total, batch, info.index, count))
        if expected != size:
            raise MergeError(f"cell {name}: shard {info.index}/{count} holds {size} clouds, but {count} shards of "
                             f"batches of {batch} over {total} clouds give it {expected}; were the shards run with "
                             "the same --limit and --batch-size?")
    for column in ("defense_params", "attack_params", "dataset_fingerprint", "victim_hash", "config_hash"):
        values = {str(r.get(column)) for r, _ in parts if r.get(column) is not None and not pd.isna(r.get(column))}
        if len(values) > 1:
            raise MergeError(f"cell {name}: the shards disagree on {column} ({sorted(values)}); they are not "
                             "shards of one run")


def _provenance(parts: list[Part], out: dict[str, Any]) -> None:
    """Set ``out``'s run id (the first shard's), cell hash, latest timestamp, and the versions and
    devices of every shard (comma-joined where they differ)."""
    first = parts[0][0]
    out["run_id"] = str(first.get("run_id"))
    hashes = sorted({str(r.get("cell_hash")) for r, _ in parts})
    out["cell_hash"] = hashes[0] if len(hashes) == 1 else config_hash({"shards": hashes})
    timestamps = sorted(str(r.get("timestamp")) for r, _ in parts if r.get("timestamp"))
    out["timestamp"] = timestamps[-1] if timestamps else out.get("timestamp")
    for column in ("device", "git_commit", "pcrb_version", "torch_version"):
        values = sorted({str(r.get(column)) for r, _ in parts if isinstance(r.get(column), str) and r.get(column)})
        out[column] = ",".join(values) if values else first.get(column)


def _timings(parts: list[Part], sizes: list[int], out: dict[str, Any]) -> None:
    """Set ``out``'s seconds (attack and evaluation summed, defense preparation the longest) and
    the sample-weighted cost ratio."""
    seconds = {c: [r.get(c) for r, _ in parts] for c in ("seconds_attack", "seconds_eval", "seconds_defense")}
    out["seconds_attack"] = round(sum(float(v) for v in seconds["seconds_attack"] if finite(v)), 3) \
        if any(finite(v) for v in seconds["seconds_attack"]) else math.nan
    out["seconds_eval"] = round(sum(float(v) for v in seconds["seconds_eval"] if finite(v)), 3)
    out["seconds_defense"] = max((float(v) for v in seconds["seconds_defense"] if finite(v)), default=math.nan)
    out["cost_ratio"] = _weighted_mean([r.get("cost_ratio") for r, _ in parts], sizes)


def _per_sample(parts: list[Part], sizes: list[int], name: str, out: dict[str, Any]) -> None:
    """Set ``out``'s ``outcomes`` and ``distances`` (None unless every shard has them), each
    cloud's value put back at its position in the subset."""
    count, batch, total = parts[0][1].count, parts[0][1].batch_size, sum(sizes)
    if all(isinstance(r.get("outcomes"), str) and r.get("outcomes") for r, _ in parts):
        merged = np.zeros(total, dtype=bool)
        for (row, info), size in zip(parts, sizes):
            bits = decode_outcomes(row["outcomes"])
            if bits.size != size:
                raise MergeError(f"cell {name}: shard {info.index}/{count} has {bits.size} outcomes for n={size}")
            merged[shard_positions(total, batch, info.index, count)] = bits
        out["outcomes"] = encode_outcomes(merged)
    else:
        out["outcomes"] = None
    if all(isinstance(r.get("distances"), str) and r.get("distances") for r, _ in parts):
        distances = np.full(total, np.inf)
        for (row, info), _size in zip(parts, sizes):
            distances[shard_positions(total, batch, info.index, count)] = decode_distances(row["distances"])
        out["distances"] = encode_distances(distances)
    else:
        out["distances"] = None


def _merge_cell(parts: list[Part]) -> dict[str, Any]:
    """One single-process row from the K shard rows of a cell (sorted by shard index)."""
    parts = sorted(parts, key=lambda p: p[1].index)
    sizes = [int(r["n"]) for r, _ in parts]
    total = sum(sizes)
    name = cell_name(parts[0][0])
    _check_parts(parts, sizes, name)
    out: dict[str, Any] = dict(parts[0][0])
    out["n"] = total
    if "shard" in out:
        out["shard"] = ""
    _provenance(parts, out)
    _timings(parts, sizes, out)
    failed = [(r, i) for r, i in parts if r.get("status") != "ok"]
    if failed:
        out.update(status="failed", correct=None, accuracy=math.nan, ci_low=math.nan, ci_high=math.nan,
                   outcomes=None, distances=None, attack_success=math.nan, l2=math.nan, chamfer=math.nan,
                   hausdorff=math.nan)
        out["error"] = "; ".join(f"shard {i.index}/{i.count}: {r.get('error') or 'failed'}" for r, i in failed)
        return out
    correct = sum(int(r["correct"]) for r, _ in parts)
    low, high = wilson_interval(correct, total)
    out.update(status="ok", error="", correct=correct, accuracy=correct / total, ci_low=low, ci_high=high)
    _per_sample(parts, sizes, name, out)
    rates = [r.get("attack_success") for r, _ in parts]
    if all(finite(v) for v in rates):
        # a float32 mean of per-sample successes, as the single process computes it
        hits = sum(round(float(v) * s) for v, s in zip(rates, sizes))
        out["attack_success"] = float(np.float32(hits) / np.float32(total))
    else:
        out["attack_success"] = math.nan
    for column in ("l2", "chamfer", "hausdorff"):
        out[column] = _weighted_mean([r.get(column) for r, _ in parts], sizes)
    return out


def merge_shard_rows(rows: Iterable[Mapping[str, Any]], shards: Iterable[ShardInfo]) -> list[dict[str, Any]]:
    """Merge shard rows into single-process rows.

    ``rows[j]`` covers shard ``shards[j]``. Rows of one cell (same key but ``n``/``shard``)
    and the same shard count and batch size are merged when their shards are exactly
    ``0..K-1``; rows with ``count == 1`` pass through. A shard present twice keeps its ``ok``
    row with the latest timestamp. Raises :class:`MergeError` for a missing shard or
    inconsistent sizes. The result is sorted by key.
    """
    groups: dict[tuple[Any, ...], list[Part]] = {}
    key_columns = [c for c in KEY_COLUMNS if c not in _SHARD_VARYING]
    for row, info in zip(rows, shards):
        key = tuple(str(row.get(c)) for c in key_columns) + (info.count, info.batch_size if info.count > 1 else 0)
        groups.setdefault(key, []).append((row, info))
    merged = []
    for _key, parts in sorted(groups.items(), key=lambda kv: kv[0]):
        count = parts[0][1].count
        if count == 1:
            merged.extend(dict(r) for r, _ in parts)
            continue
        by_index: dict[int, Part] = {}
        for row, info in parts:
            old = by_index.get(info.index)
            rank = (row.get("status") == "ok", str(row.get("timestamp")))
            if old is None or rank > (old[0].get("status") == "ok", str(old[0].get("timestamp"))):
                by_index[info.index] = (row, info)
        missing = sorted(set(range(count)) - set(by_index))
        if missing:
            raise MergeError(f"cell {cell_name(parts[0][0])}: shard(s) {', '.join(f'{i}/{count}' for i in missing)} "
                             f"missing; pass every shard's results folder (bench merge --results DIR1 DIR2 ...)")
        merged.append(_merge_cell(list(by_index.values())))
    return merged
