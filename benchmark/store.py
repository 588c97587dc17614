"""The results store: one CSV row per evaluated cell, written atomically, idempotent by key.

A *cell* is (dataset, profile, protocol, victim, source, defense, attack, seed, n): the
accuracy of one defended model on one set of clouds (``attack == "clean"`` for the clean
clouds). Rows live in ``<out_dir>/<dataset>.csv``; run metadata in
``<out_dir>/runs/<run-id>.json``.

- **Variants are kept**: the key also holds ``defense_variant`` and ``attack_variant``, the
  settings that differ from the profile's (``benchmark.variants``), so a row computed with
  other parameters never replaces the profile's row; tables label it ``mrpd [epochs=50]``.
- **Idempotent**: writing a row whose key exists replaces it (never duplicates it), and
  :meth:`ResultStore.write` returns the rows it replaced so the caller can say so.
- **Atomic, concurrent-safe**: each write takes an exclusive lock on ``<csv>.lock``, reads
  the current file, merges, writes a temporary file and renames it over the CSV, so a
  reader never sees a partial file and two runs never lose each other's rows.
- **Resumable**: :meth:`ResultStore.finished` says whether a cell with the same key *and
  the same cell hash* (everything that determines its numbers) is already stored.
- **Per-sample outcomes**: each row keeps which clouds were classified correctly (packed
  bits, hex), so the worst-case robust accuracy over attacks (AutoAttack's convention)
  can be computed from the CSV alone.

Floor 0: imports numpy, pandas and the standard library only.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CLEAN",
    "COLUMNS",
    "GROUP_COLUMNS",
    "KEY_COLUMNS",
    "VOLATILE_COLUMNS",
    "ResultStore",
    "decode_distances",
    "decode_outcomes",
    "encode_distances",
    "encode_outcomes",
    "min_norm_distances",
    "summary_table",
    "survival",
    "wilson_interval",
    "with_labels",
    "worst_case",
]

#: The ``attack`` of the rows that classify the unattacked clouds.
CLEAN = "clean"

#: Columns that identify a cell: a row with the same values replaces the old one.
KEY_COLUMNS: tuple[str, ...] = (
    "dataset", "profile", "protocol", "victim", "source", "defense", "defense_variant", "attack", "attack_variant",
    "seed", "n", "shard",
)

#: Key columns that identify a defended model's group of cells (clean + every attack).
GROUP_COLUMNS: tuple[str, ...] = tuple(c for c in KEY_COLUMNS if c not in ("attack", "attack_variant", "source"))

#: Every column, in the order the CSV keeps them.
COLUMNS: tuple[str, ...] = (
    *KEY_COLUMNS,
    "status",  # ok | failed
    "batch_size",  # clouds per batch (randomised defenses draw per batch)
    "correct", "accuracy", "ci_low", "ci_high",  # accuracy of the defended model, Wilson 95% CI
    "attack_success",  # success rate of the attack on the model it was crafted against
    "l2", "chamfer", "hausdorff",  # mean distances of the clouds to the clean ones
    "seconds_attack", "seconds_defense", "seconds_eval", "cost_ratio",
    "defense_params", "attack_params",  # canonical JSON
    "cell_hash", "config_hash", "dataset_fingerprint", "victim_hash",
    "attack_role",  # strong | weak | min-norm ("" for clean): what the attack is for (attack registry tags)
    "outcomes",  # per-sample correctness, packed bits as hex (sample order = the test subset's)
    "distances",  # min-norm attacks: per-sample minimal L2 distance on the source model (float16 hex; inf = none)
    "error",
    "run_id", "pcrb_version", "torch_version", "git_commit", "device", "timestamp",
)

#: Columns that may differ between two identical runs (timings, provenance of the run).
VOLATILE_COLUMNS: tuple[str, ...] = (
    "seconds_attack", "seconds_defense", "seconds_eval", "cost_ratio", "run_id", "timestamp",
    "device", "git_commit", "pcrb_version", "torch_version",
)

_INT_COLUMNS = ("seed", "n", "correct", "batch_size")
_FLOAT_COLUMNS = ("accuracy", "ci_low", "ci_high", "attack_success", "l2", "chamfer", "hausdorff",
                  "seconds_attack", "seconds_defense", "seconds_eval", "cost_ratio")


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``correct / n`` (default 95%).

    Returns ``(low, high)`` in ``[0, 1]``; ``(nan, nan)`` when ``n == 0``.
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= correct <= n:
        raise ValueError(f"correct must lie in [0, n] = [0, {n}]; got {correct}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def encode_outcomes(correct: Sequence[bool] | np.ndarray) -> str:
    """Per-sample booleans -> ``"<n>:<hex of packed bits>"`` (compact, exact, CSV-safe)."""
    bits = np.asarray(correct, dtype=bool).ravel()
    return f"{bits.size}:{np.packbits(bits).tobytes().hex()}"


def encode_distances(values: Sequence[float] | np.ndarray) -> str:
    """Per-sample distances -> ``"<n>:<hex of float16>"`` (3 significant digits, ``inf`` kept)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    return f"{arr.size}:{arr.astype('<f2').tobytes().hex()}"


def decode_distances(text: str) -> np.ndarray:
    """Inverse of :func:`encode_distances`: a float64 array."""
    try:
        size, hexbits = str(text).split(":", 1)
        arr = np.frombuffer(bytes.fromhex(hexbits), dtype="<f2").astype(np.float64)
    except (ValueError, TypeError) as err:
        raise ValueError(f"malformed distances field {text!r}; expected '<n>:<hex>'") from err
    if arr.size != int(size):
        raise ValueError(f"malformed distances field: {arr.size} values for n = {size}")
    return arr


def decode_outcomes(text: str) -> np.ndarray:
    """Inverse of :func:`encode_outcomes`: a bool array."""
    try:
        size, hexbits = str(text).split(":", 1)
        raw = np.frombuffer(bytes.fromhex(hexbits), dtype=np.uint8)
        return np.unpackbits(raw)[: int(size)].astype(bool)
    except (ValueError, TypeError) as err:
        raise ValueError(f"malformed outcomes field {text!r}; expected '<n>:<hex>'") from err


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created); a no-op where ``fcntl`` is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rely on the atomic rename alone
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _safe_name(value: str, what: str) -> str:
    """``value`` as one plain file-name component (a dataset name or run id must not become a path)."""
    if not _SAFE_NAME.match(value) or ".." in value:
        raise ValueError(f"unsafe {what} {value!r} for a results file name: use letters, digits, '.', '_' and '-' only")
    return value


def _remove_stale_temps(path: Path) -> None:
    """Remove the temporary files a killed writer of ``path`` left behind; call under ``path``'s lock
    (every writer of ``path`` holds it while its temporary file exists, so any found now is stale)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame = frame[list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS]]
    for column in _INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in _FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in KEY_COLUMNS:
        if column not in _INT_COLUMNS:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
    return frame


def _sort(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)


class ResultStore:
    """Rows of results under ``out_dir`` (one CSV per dataset)."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)

    def csv_path(self, dataset: str) -> Path:
        return self.out_dir / f"{_safe_name(dataset, 'dataset name')}.csv"

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
            return _normalise(pd.DataFrame(columns=list(COLUMNS)))
        return _sort(_normalise(pd.concat(frames, ignore_index=True)))

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
            with _locked(path.parent / f".{path.name}.lock"):
                old = self.read(str(dataset))
                part = _normalise(part.copy())
                if not old.empty:
                    keys = set(map(tuple, part[list(KEY_COLUMNS)].astype(str).to_numpy().tolist()))
                    hit = [tuple(k) in keys for k in old[list(KEY_COLUMNS)].astype(str).to_numpy().tolist()]
                    replaced += old[hit].to_dict("records")
                merged = _normalise(pd.concat([old, part], ignore_index=True))
                merged = merged.drop_duplicates(list(KEY_COLUMNS), keep="last")
                _remove_stale_temps(path)
                _atomic_write_text(path, _sort(merged).to_csv(index=False, float_format="%.6g"))
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
        path = self.out_dir / "runs" / f"{_safe_name(run_id, 'run id')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(path, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        return path


def attack_roles(part: pd.DataFrame) -> pd.Series:
    return part["attack_role"].fillna("").astype(str) if "attack_role" in part.columns else pd.Series("", index=part.index)


def survival(frame: pd.DataFrame, *, strong_only: bool = False) -> dict[tuple[Any, ...], np.ndarray]:
    """Per group of :data:`GROUP_COLUMNS` (one defended model's cells), which clouds are
    classified correctly clean *and* under every attack of the group: bool ``[n]``.

    Minimum-norm attacks (``attack_role == "min-norm"``, unbounded) never count. With
    ``strong_only`` only the strong attacks count (``attack_role == "strong"``; AutoAttack's
    convention over the attacks meant to break an undefended model). Failed cells are ignored;
    a group whose cells disagree on ``n`` is left out.
    """
    ok = _with_key_columns(frame[frame["status"] == "ok"])
    out: dict[tuple[Any, ...], np.ndarray] = {}
    for key, part in ok.groupby(list(GROUP_COLUMNS), sort=True, dropna=False):
        roles = attack_roles(part)
        keep = (part["attack"] == CLEAN) | ((roles == "strong") if strong_only else (roles != "min-norm"))
        outcomes = [decode_outcomes(o) for o in part.loc[keep, "outcomes"] if isinstance(o, str) and o]
        if not outcomes or len({o.size for o in outcomes}) != 1:
            continue
        out[key] = np.logical_and.reduce(outcomes)
    return out


def worst_case(frame: pd.DataFrame, *, strong_only: bool = False) -> pd.Series:
    """Worst-case robust accuracy per group of :data:`GROUP_COLUMNS`: the share of clouds that
    :func:`survival` keeps (clean and every attack, or every strong attack)."""
    return pd.Series({k: float(v.mean()) for k, v in survival(frame, strong_only=strong_only).items()}, dtype=float)


def min_norm_distances(frame: pd.DataFrame) -> dict[tuple[Any, ...], np.ndarray]:
    """Per group of :data:`GROUP_COLUMNS` with a minimum-norm attack row (and its clean row):
    each cloud's effective minimal distance (``benchmark.core.curves.effective_distances``)."""
    from benchmark.core.curves import effective_distances

    ok = _with_key_columns(frame[frame["status"] == "ok"])
    out: dict[tuple[Any, ...], np.ndarray] = {}
    for key, part in ok.groupby(list(GROUP_COLUMNS), sort=True, dropna=False):
        clean = part[part["attack"] == CLEAN]
        norm = part[attack_roles(part) == "min-norm"]
        if clean.empty or norm.empty or not isinstance(clean["outcomes"].iloc[-1], str):
            continue
        row = norm.iloc[-1]
        if not (isinstance(row.get("distances"), str) and isinstance(row.get("outcomes"), str)):
            continue
        out[key] = effective_distances(decode_outcomes(clean["outcomes"].iloc[-1]), decode_outcomes(row["outcomes"]),
                                       decode_distances(row["distances"]))
    return out


def _with_key_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every key column (a missing one, e.g. the variants of rows written before
    they existed or built by hand, is ``""``)."""
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    return frame.assign(**{c: "" for c in missing}) if missing else frame


def with_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy in which ``defense`` and ``attack`` carry their variant (``"mrpd [epochs=50]"``,
    ``benchmark.variants.label``); the bare names move to ``defense_name`` / ``attack_name``."""
    from benchmark.variants import label

    out = _with_key_columns(frame).copy()
    if out.empty:
        out["defense_name"], out["attack_name"] = out.get("defense"), out.get("attack")
        return out
    for what in ("defense", "attack"):
        variant = out[f"{what}_variant"] if f"{what}_variant" in out.columns else pd.Series("", index=out.index)
        out[f"{what}_name"] = out[what]
        out[what] = [label(str(n), v) for n, v in zip(out[what], variant)]
    return out


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows = ``clean`` + attacks + ``mean over attacks`` + ``worst case`` (+ ``worst case
    (strong)`` and ``median min L2`` when the rows hold strong / minimum-norm attacks),
    columns = defenses (``none`` first), cells = accuracy in percent (the median minimal L2
    distance in cloud units), for the rows of one (dataset, protocol). A variant
    (``benchmark.variants``) is its own row or column, labelled. The mean and worst cases
    leave minimum-norm attacks out (they have no budget)."""
    from benchmark.core.curves import median_distance

    ok = with_labels(frame[frame["status"] == "ok"])
    if ok.empty:
        return pd.DataFrame()
    table = ok.pivot_table(index="attack", columns="defense", values="accuracy", aggfunc="last") * 100
    attacks = [a for a in dict.fromkeys(ok["attack"]) if a != CLEAN]
    roles = dict(zip(ok["attack"], attack_roles(ok)))
    bounded = [a for a in attacks if roles.get(a) != "min-norm"]
    order = ([CLEAN] if CLEAN in table.index else []) + attacks
    table = table.reindex(order)
    defenses = list(dict.fromkeys(ok["defense"]))
    defenses = (["none"] if "none" in defenses else []) + [d for d in defenses if d != "none"]
    table = table[defenses]
    at = GROUP_COLUMNS.index("defense")

    def per_defense(values: Mapping[tuple[Any, ...], float], scale: float = 100.0) -> list[float]:
        return [scale * min(v for k, v in values.items() if k[at] == d) if any(k[at] == d for k in values) else np.nan
                for d in defenses]

    if bounded:
        table.loc["mean over attacks"] = table.loc[bounded].mean(axis=0)
        table.loc["worst case"] = per_defense(worst_case(ok).to_dict())
        if any(roles.get(a) == "strong" for a in bounded):
            table.loc["worst case (strong)"] = per_defense(worst_case(ok, strong_only=True).to_dict())
    distances = {k: median_distance(v) for k, v in min_norm_distances(ok).items()}
    if distances:
        table.loc["median min L2"] = per_defense(distances, scale=1.0)
    return table
