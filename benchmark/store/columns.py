"""What a results row holds: its columns, which of them form the key, and their types.

A *cell* is (dataset, profile, protocol, victim, source, defense, attack, seed, n) plus the
variants and the shard: the accuracy of one defended model on one set of clouds
(``attack == "clean"`` for the clean clouds). :data:`COLUMNS` is the CSV's column order;
:func:`normalise` gives any frame of rows exactly those columns and types.
"""
from __future__ import annotations

import pandas as pd

__all__ = ["CLEAN", "COLUMNS", "GROUP_COLUMNS", "KEY_COLUMNS", "VOLATILE_COLUMNS", "normalise", "sort_rows",
           "with_key_columns"]

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

#: Columns read back as integers (``Int64``: a failed cell has no ``correct``) and as floats.
INT_COLUMNS = ("seed", "n", "correct", "batch_size")
FLOAT_COLUMNS = ("accuracy", "ci_low", "ci_high", "attack_success", "l2", "chamfer", "hausdorff",
                 "seconds_attack", "seconds_defense", "seconds_eval", "cost_ratio")


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column of :data:`COLUMNS` (missing ones empty) first, in order, typed:
    integer columns ``Int64``, float columns ``float``, the other key columns ``str`` (``""`` for none)."""
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame = frame[list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS]]
    for column in INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in KEY_COLUMNS:
        if column not in INT_COLUMNS:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
    return frame


def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted by :data:`KEY_COLUMNS` (stable), with a fresh index."""
    return frame.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)


def with_key_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every key column (a missing one, e.g. the variants of rows written before
    they existed or built by hand, is ``""``)."""
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    return frame.assign(**{c: "" for c in missing}) if missing else frame

