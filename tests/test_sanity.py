"""Sanity checks over results tables (Carlini et al.'s checklist), on hand-made rows."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from benchmark.sanity import sanity_warnings, sweep_warnings
from benchmark.store import ResultStore

PGD = {"budget": 0.08, "steps": 20, "norm": "l2", "seed": 0}


def row(defense: str = "none", attack: str = "pgd", accuracy: float = 0.1, *, protocol: str = "transfer",
        profile: str = "paper", success: float = 0.99, params: dict | None = None, **extra) -> dict:
    """One result row as the store keeps it (accuracies are fractions)."""
    base = {"dataset": "modelnet40", "profile": profile, "protocol": protocol, "victim": "pointnet",
            "source": "" if attack == "clean" else "pointnet", "defense": defense, "attack": attack, "seed": 0,
            "n": 200, "shard": "", "status": "ok", "accuracy": accuracy,
            "attack_success": math.nan if attack == "clean" else success,
            "attack_params": "" if attack == "clean" else json.dumps(params or PGD, sort_keys=True),
            "cell_hash": f"{protocol}-{defense}-{attack}-{accuracy}"}
    base.update(extra)
    return base


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def healthy() -> list[dict]:
    """A table nothing is wrong with: strong attacks, adaptive below transfer."""
    return [
        row("none", "clean", 0.90), row("none", "pgd", 0.02, success=0.98),
        row("none", "cw", 0.05, success=0.95, params={"binary_steps": 10, "num_iter": 50}),
        row("sor", "clean", 0.88), row("sor", "pgd", 0.60),
        row("none", "clean", 0.90, protocol="adaptive"), row("none", "pgd", 0.02, protocol="adaptive", success=0.98),
        row("sor", "clean", 0.88, protocol="adaptive"), row("sor", "pgd", 0.30, protocol="adaptive", success=0.7),
    ]


def test_a_healthy_table_gives_no_warnings():
    assert sanity_warnings(frame(*healthy())) == []


def test_an_empty_table_gives_no_warnings():
    assert sanity_warnings(pd.DataFrame()) == []


# ------------------------------------------------------------------------------------- weak attack


def test_a_weak_pgd_at_paper_budgets_is_named_with_its_success_rate():
    (line,) = sanity_warnings(frame(row("none", "clean", 0.9), row("none", "pgd", 0.5, success=0.72)))
    assert line.startswith("weak attack: pgd")
    assert "72.0%" in line and "90.0%" in line and "pointnet" in line and "modelnet40" in line
    assert "steps" in line  # says what to check


def test_a_weak_cw_is_named_too_but_not_other_attacks():
    rows = frame(row("none", "cw", 0.5, success=0.5, params={"num_iter": 50}),
                 row("none", "knn", 0.5, success=0.1, params={"num_iter": 2500}))
    (line,) = sanity_warnings(rows)
    assert line.startswith("weak attack: cw") and "50.0%" in line


def test_a_weak_attack_outside_the_paper_profile_is_not_flagged():
    assert sanity_warnings(frame(row("none", "pgd", 0.5, success=0.3, profile="smoke"))) == []


def test_paper_params_make_another_profile_count_as_paper_budgets():
    rows = frame(row("none", "pgd", 0.5, success=0.3, profile="default"))
    assert len(sanity_warnings(rows, paper_params={"pgd": {"budget": 0.08, "steps": 20}})) == 1
    assert sanity_warnings(rows, paper_params={"pgd": {"steps": 50}}) == []


def test_a_weak_attack_is_reported_once_for_the_crafted_set_transfer_and_adaptive_share():
    rows = frame(row("none", "pgd", 0.5, success=0.6), row("none", "pgd", 0.5, success=0.6, protocol="adaptive"))
    (line,) = sanity_warnings(rows)
    assert "transfer" in line


def test_success_of_an_attack_on_a_defended_source_is_not_a_weak_attack():
    rows = frame(row("sor", "pgd", 0.8, protocol="adaptive", success=0.2))
    assert [w for w in sanity_warnings(rows) if w.startswith("weak attack")] == []


def test_failed_rows_are_ignored():
    assert sanity_warnings(frame(row("none", "pgd", 0.5, success=0.1, status="failed"))) == []


# ------------------------------------------------------------------------------------ budget sweep


def sweep(defense: str, points: list[tuple[float, float]], knob: str = "budget") -> list[dict]:
    return [row(defense, "pgd", acc, profile="default", params={**PGD, knob: value}) for value, acc in points]


def test_robust_accuracy_rising_with_the_budget_is_named_with_both_budgets():
    (line,) = sanity_warnings(frame(*sweep("sor", [(0.02, 0.6), (0.04, 0.4), (0.08, 0.5)])))
    assert line.startswith("budget sweep: sor under pgd as budget grows")
    assert "40.0% at 0.04 -> 50.0% at 0.08" in line and "gradient masking" in line


def test_a_falling_or_flat_sweep_is_fine():
    assert sanity_warnings(frame(*sweep("sor", [(0.02, 0.6), (0.04, 0.4), (0.08, 0.4), (0.16, 0.1)]))) == []


def test_a_rise_within_the_tolerance_is_noise():
    assert sanity_warnings(frame(*sweep("sor", [(0.02, 0.40), (0.04, 0.41)]))) == []


def test_a_slow_creep_over_many_budgets_is_caught():
    rows = frame(*sweep("sor", [(0.01, 0.30), (0.02, 0.315), (0.04, 0.33), (0.08, 0.345)]))
    (line,) = sanity_warnings(rows)
    assert "30.0% at 0.01 -> 34.5% at 0.08" in line


def test_a_sweep_over_steps_is_checked_like_one_over_the_budget():
    (line,) = sanity_warnings(frame(*sweep("srs", [(10, 0.2), (50, 0.5)], knob="steps")))
    assert "as steps grows" in line


def test_each_defense_is_its_own_sweep():
    rows = frame(*sweep("sor", [(0.02, 0.6), (0.08, 0.3)]), *sweep("srs", [(0.02, 0.3), (0.08, 0.6)]))
    (line,) = sanity_warnings(rows)
    assert "srs under pgd" in line


def test_rows_that_differ_in_two_knobs_are_not_a_sweep():
    rows = frame(row("sor", "pgd", 0.2, profile="default", params={**PGD, "budget": 0.02, "steps": 10}),
                 row("sor", "pgd", 0.6, profile="default", params={**PGD, "budget": 0.08, "steps": 50}))
    assert sanity_warnings(rows) == []


def test_sweep_warnings_takes_pairs_in_any_order_and_averages_repeats():
    assert sweep_warnings([(0.08, 0.2), (0.02, 0.5), (0.04, 0.3)]) == []
    (line,) = sweep_warnings([(0.08, 0.5), (0.02, 0.5), (0.04, 0.1), (0.04, 0.3)], what="mrpd under pgd")
    assert "mrpd under pgd" in line and "20.0% at 0.04 -> 50.0% at 0.08" in line


def test_sweep_warnings_skips_missing_accuracies():
    assert sweep_warnings([(0.02, 0.5), (0.04, math.nan), (0.08, 0.4)]) == []


# -------------------------------------------------------------------------------- gradient masking


def test_adaptive_far_above_transfer_is_flagged_as_gradient_masking():
    rows = frame(row("mrpd", "pgd", 0.30), row("mrpd", "pgd", 0.62, protocol="adaptive", success=0.4))
    (line,) = sanity_warnings(rows)
    assert line.startswith("gradient masking: mrpd under pgd")
    assert "62.0%" in line and "32.0 points above transfer accuracy 30.0%" in line and "--eot" in line


def test_adaptive_slightly_above_transfer_is_within_the_gap():
    rows = frame(row("mrpd", "pgd", 0.30), row("mrpd", "pgd", 0.38, protocol="adaptive"))
    assert sanity_warnings(rows) == []
    assert len(sanity_warnings(rows, gap=0.05)) == 1


def test_gradient_masking_compares_with_the_strongest_non_adaptive_protocol():
    rows = frame(row("sor", "pgd", 0.50), row("sor", "pgd", 0.20, protocol="blackbox"),
                 row("sor", "pgd", 0.45, protocol="adaptive"))
    (line,) = sanity_warnings(rows)
    assert "above blackbox accuracy 20.0%" in line


def test_gradient_masking_never_pairs_rows_of_different_victim_weights():
    """Adaptive rows left from an earlier victim (other weights) are not compared with new transfer rows."""
    rows = frame(row("mrpd", "pgd", 0.30, victim_hash="new"), row("mrpd", "pgd", 0.88, protocol="adaptive",
                                                                  victim_hash="old"))
    assert sanity_warnings(rows) == []
    rows = frame(row("mrpd", "pgd", 0.30, victim_hash="new"), row("mrpd", "pgd", 0.88, protocol="adaptive",
                                                                  victim_hash="new"))
    assert len(sanity_warnings(rows)) == 1


def test_gradient_masking_needs_the_same_attack_parameters():
    rows = frame(row("sor", "pgd", 0.10), row("sor", "pgd", 0.60, protocol="adaptive", params={**PGD, "steps": 5}))
    assert sanity_warnings(rows) == []


# ------------------------------------------------------------------------------------ attack helps


def test_an_attack_raising_accuracy_of_its_own_source_is_flagged():
    rows = frame(row("none", "clean", 0.50), row("none", "pgd", 0.75, success=0.99, profile="paper"))
    (line,) = sanity_warnings(rows)
    assert line.startswith("attack helps: none is more accurate under pgd (75.0%) than on clean clouds (50.0%)")


def test_transfer_examples_may_help_a_defense_they_were_not_crafted_against():
    rows = frame(row("srs", "clean", 0.50), row("srs", "pgd", 0.75))
    assert sanity_warnings(rows) == []


# ------------------------------------------------------------------------------ from the real store


def test_warnings_are_the_same_after_a_round_trip_through_the_results_store(tmp_path):
    rows = [*healthy(), row("none", "pgd", 0.5, success=0.7, protocol="blackbox", source="dgcnn"),
            row("sor", "pgd", 0.9, protocol="blackbox")]
    ResultStore(tmp_path).write(rows)
    stored = ResultStore(tmp_path).read()
    assert sanity_warnings(stored) == sanity_warnings(frame(*rows))
    assert [w.split(":")[0] for w in sanity_warnings(stored)] == ["weak attack"]
    assert "undefended dgcnn" in sanity_warnings(stored)[0]


def every_check() -> pd.DataFrame:
    """A table that trips each of the four checks once, plus a failed cell (status "error")
    that would be a weak attack if it counted."""
    return frame(
        row("none", "clean", 0.30),
        row("none", "pgd", 0.50, success=0.50),  # weak attack, and more accurate than clean: attack helps
        row("none", "cw", 0.25, success=0.10, status="error", params={"binary_steps": 10, "num_iter": 50}),
        row("sor", "clean", 0.88),
        row("sor", "pgd", 0.30, params={**PGD, "budget": 0.04}),
        row("sor", "pgd", 0.60, params={**PGD, "budget": 0.16}),  # accuracy rises with the budget
        row("sor", "pgd", 0.90, protocol="adaptive", success=0.1, params={**PGD, "budget": 0.04}),  # masking
    )


def checks(warnings: list[str]) -> list[str]:
    return [w.split(":")[0] for w in warnings]


def test_the_every_check_table_trips_every_check_once():
    warnings = sanity_warnings(every_check())
    assert checks(warnings) == ["weak attack", "budget sweep", "gradient masking", "attack helps"]
    assert warnings[0].startswith("weak attack: pgd")  # the failed cw cell does not count


@pytest.mark.parametrize("missing, disabled", [
    ("attack_params", ["budget sweep"]),  # the budgets live in attack_params
    ("attack_success", ["weak attack"]),  # the success rate is what check 1 reads
    ("status", []),  # no status: every row counts, nothing is disabled
], ids=["attack_params", "attack_success", "status"])
def test_missing_columns_disable_checks_instead_of_failing(missing, disabled):
    full = sanity_warnings(every_check())
    warnings = sanity_warnings(every_check().drop(columns=[missing]))
    by_check = {c: w for c, w in zip(checks(full), full)}
    if missing == "status":
        # the failed cw cell now counts as a result: one more weak attack, the rest unchanged
        assert checks(warnings) == ["weak attack", *checks(full)]
        assert warnings[0].startswith("weak attack: cw succeeds on only 10.0%")
        assert warnings[1:] == full
        return
    assert checks(warnings) == [c for c in checks(full) if c not in disabled]
    for line in warnings:
        check = line.split(":")[0]
        if missing == "attack_params" and check == "gradient masking":
            # without the parameters the budget-0.16 transfer row pairs with the adaptive row too
            assert line.startswith("gradient masking: sor under pgd")
        else:
            assert line == by_check[check]  # the checks that remain say exactly what they said


def test_a_strong_attack_below_90_percent_is_flagged_in_every_profile_but_smoke():
    knn = {"num_iter": 100}
    rows = [row("none", "knn", 0.5, profile="default", success=0.48, params=knn, attack_role="strong"),
            row("none", "knn", 0.5, profile="smoke", success=0.10, params=knn, attack_role="strong"),
            row("none", "drop-100", 0.7, profile="default", success=0.23, params={"num_drop": 100}, attack_role="weak")]
    found = sanity_warnings(frame(*rows))
    assert len(found) == 1 and found[0].startswith("weak attack: knn succeeds on only 48.0%")
    assert "as a strong attack at its profile's settings" in found[0]


def test_a_min_norm_attack_must_fool_every_cloud_and_find_the_closest_examples():
    from benchmark.store import encode_distances, encode_outcomes

    n = 50
    distances = [0.05] * 10 + [0.5] * 40
    pgd_fooled = [True] * 10 + [True] * 5 + [False] * 35  # 5 clouds pgd fools within 0.08 that fmn put at 0.5
    rows = [row("none", "fmn", 0.0, profile="default", success=0.8, params={"steps": 50}, attack_role="min-norm",
                n=n, distances=encode_distances(distances), outcomes=encode_outcomes([False] * n)),
            row("none", "pgd", 0.7, profile="default", success=0.3, params=PGD, attack_role="weak", n=n,
                outcomes=encode_outcomes([not f for f in pgd_fooled]))]
    found = sanity_warnings(frame(*rows))
    assert [w.split(":")[0] for w in found] == ["min-norm attack", "min-norm attack"]
    assert "fools only 80.0%" in found[0] and "pgd fools 10.0% of the clouds" in found[1] and "within L2 0.08" in found[1]
