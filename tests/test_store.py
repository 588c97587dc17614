"""The results store: Wilson intervals, outcomes, idempotent atomic writes, summaries."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pandas as pd
import pytest

from benchmark.store import (
    KEY_COLUMNS,
    ResultStore,
    decode_outcomes,
    encode_outcomes,
    summary_table,
    wilson_interval,
    worst_case,
)


def row(defense="none", attack="clean", correct=(1, 1, 0, 1), **extra):
    bits = np.array(correct, dtype=bool)
    base = {"dataset": "toy", "profile": "smoke", "protocol": "transfer", "victim": "v", "source": "",
            "defense": defense, "defense_variant": "", "attack": attack, "attack_variant": "", "seed": 0,
            "n": bits.size, "shard": "", "status": "ok",
            "correct": int(bits.sum()), "accuracy": bits.mean(), "outcomes": encode_outcomes(bits),
            "cell_hash": "h"}
    base.update(extra)
    return base


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert all(np.isnan(wilson_interval(0, 0)))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 257])
def test_outcomes_round_trip(n):
    bits = np.random.default_rng(n).random(n) > 0.5
    assert np.array_equal(decode_outcomes(encode_outcomes(bits)), bits)
    with pytest.raises(ValueError, match="malformed"):
        decode_outcomes("nonsense")


def test_write_is_idempotent_by_key(tmp_path):
    store = ResultStore(tmp_path)
    store.write([row(), row(attack="pgd", correct=(0, 0, 0, 1))])
    store.write([row(correct=(0, 1, 1, 1), cell_hash="h2")])  # same key: replaces
    frame = store.read("toy")
    assert len(frame) == 2
    clean = frame[frame["attack"] == "clean"].iloc[0]
    assert clean["correct"] == 3 and clean["cell_hash"] == "h2"
    assert store.finished({k: clean[k] for k in KEY_COLUMNS}, "h2") is not None
    assert store.finished({k: clean[k] for k in KEY_COLUMNS}, "h") is None
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_write_returns_the_rows_it_replaced(tmp_path):
    store = ResultStore(tmp_path)
    assert store.write([row(), row(attack="pgd")]) == []
    replaced = store.write([row(correct=(0, 0, 0, 0), cell_hash="h2"), row(defense="sor")])
    assert len(replaced) == 1 and replaced[0]["defense"] == "none" and replaced[0]["cell_hash"] == "h"


def test_a_variant_is_a_new_row_labelled_in_the_summary(tmp_path):
    store = ResultStore(tmp_path)
    store.write([row("mrpd"), row("mrpd", "pgd", correct=(1, 0, 0, 1))])
    replaced = store.write([row("mrpd", defense_variant="epochs=50", correct=(1, 1, 1, 1)),
                            row("mrpd", "pgd", defense_variant="epochs=50", correct=(1, 1, 0, 1)),
                            row("mrpd", "pgd", attack_variant="budget=0.16", correct=(0, 0, 0, 1))])
    assert replaced == []
    frame = store.read("toy")
    assert len(frame) == 5
    table = summary_table(frame)
    assert list(table.columns) == ["mrpd", "mrpd [epochs=50]"]
    assert list(table.index) == ["clean", "pgd", "pgd [budget=0.16]", "mean over attacks", "worst case"]
    assert table.loc["pgd", "mrpd [epochs=50]"] == 75.0 and np.isnan(table.loc["pgd [budget=0.16]", "mrpd [epochs=50]"])
    # worst case per variant: the profile's mrpd must survive both attacks; the variant only its own pgd
    assert table.loc["worst case", "mrpd"] == 25.0 and table.loc["worst case", "mrpd [epochs=50]"] == 75.0


def test_failed_cells_do_not_count_as_finished(tmp_path):
    store = ResultStore(tmp_path)
    store.write([row(status="failed", error="boom")])
    key = {k: row()[k] for k in KEY_COLUMNS}
    assert store.finished(key, "h") is None


def _writer(args):
    out_dir, i = args
    ResultStore(out_dir).write([row(defense=f"d{i}-{j}") for j in range(5)])


def test_concurrent_writers_keep_every_row(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_writer, [(str(tmp_path), i) for i in range(8)])
    frame = ResultStore(tmp_path).read("toy")
    assert len(frame) == 40 and frame["defense"].nunique() == 40


def test_unreadable_csv_names_the_fix(tmp_path):
    (tmp_path / "toy.csv").write_bytes(b"\xff\xfe\x00garbage\n\"unterminated")
    with pytest.raises(ValueError, match="move it away"):
        ResultStore(tmp_path).read("toy")


def test_summary_table_mean_and_worst_case():
    rows = pd.DataFrame([
        row("none", "clean", (1, 1, 1, 1)), row("none", "a", (1, 0, 1, 0)), row("none", "b", (0, 1, 1, 0)),
        row("sor", "clean", (1, 1, 1, 0)), row("sor", "a", (1, 1, 1, 0)), row("sor", "b", (1, 1, 0, 0)),
        row("sor", "c", (1, 1, 1, 1), status="failed"),
    ])
    table = summary_table(rows)
    assert list(table.columns) == ["none", "sor"]
    assert list(table.index) == ["clean", "a", "b", "mean over attacks", "worst case"]
    assert table.loc["mean over attacks", "none"] == pytest.approx(50.0)
    assert table.loc["worst case", "none"] == pytest.approx(25.0)  # only sample 2 survives all
    assert table.loc["worst case", "sor"] == pytest.approx(50.0)
    worst = worst_case(rows)
    assert len(worst) == 2
