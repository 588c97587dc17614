"""``bench ablate``: declared variants, the summary table, the markdown, the CLI's errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import defenses  # noqa: F401  (registers the defenses)
from benchmark.ablate import (
    Ablation,
    ablation_markdown,
    ablation_summary,
    column_name,
    mechanism_markdown,
    same_as_full,
    variants_of,
)
from benchmark.cli import main
from benchmark.store import encode_outcomes

VARIANTS = {"full": Ablation({}, "everything", 72.58), "no-gate": Ablation({"gate": False}, "no gate", 70.99)}


def _rows() -> pd.DataFrame:
    """Two attacks on 4 clouds: none, the full method and one variant, with known outcomes."""
    outcomes = {  # per defense: clean, pgd, cw correctness of the 4 clouds
        "none": ([1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]),
        "mrpd": ([1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]),
        "mrpd-no-gate": ([1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]),
        "prompt-at": ([1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0]),
    }
    rows = []
    for defense, per_attack in outcomes.items():
        for attack, correct in zip(("clean", "pgd", "cw"), per_attack):
            rows.append({"dataset": "synthshapes", "profile": "smoke", "protocol": "transfer", "victim": "v",
                         "source": "v", "defense": defense, "attack": attack, "seed": 0, "n": 4, "shard": "",
                         "status": "ok", "accuracy": float(np.mean(correct)), "outcomes": encode_outcomes(correct)})
    return pd.DataFrame(rows)


def test_mrpd_declares_the_papers_ablations_full_method_first():
    variants = variants_of("mrpd")
    assert next(iter(variants)) == "full" and variants["full"].changes == {}
    for name in ("no-image", "no-point", "no-gate", "fixed-weights", "prompts-5-3", "prompts-10-5", "prompts-15-3"):
        assert name in variants
    assert variants["no-point"].paper == pytest.approx(70.38)
    # each variant's changes are real parameters of the defense
    from defenses import build_defense
    for ablation in variants.values():
        build_defense("mrpd", **dict(ablation.changes))


def test_variant_selection_keeps_the_full_method_and_rejects_unknown_names():
    assert list(variants_of("mrpd", ["no-gate"])) == ["full", "no-gate"]
    with pytest.raises(ValueError, match="unknown mrpd ablation"):
        variants_of("mrpd", ["no-such"])
    with pytest.raises(ValueError, match="declares no ablations; defenses with ablations: mrpd"):
        variants_of("sor")


def test_summary_has_clean_mean_worst_and_delta_against_the_full_method():
    summary = ablation_summary(_rows(), "mrpd", VARIANTS).set_index("variant")
    assert list(summary.index) == ["none", "full", "no-gate"]
    assert summary.loc["full", "clean"] == pytest.approx(100.0)
    assert summary.loc["full", "mean robust"] == pytest.approx((75 + 50) / 2)
    assert summary.loc["no-gate", "mean robust"] == pytest.approx((50 + 25) / 2)
    assert summary.loc["no-gate", "delta mean"] == pytest.approx(37.5 - 62.5)
    assert summary.loc["full", "worst case"] == pytest.approx(50.0)  # clouds 0 and 1 survive both attacks
    assert summary.loc["none", "worst case"] == pytest.approx(0.0)
    assert np.isnan(summary.loc["none", "delta mean"]) and summary.loc["no-gate", "changes"] == "gate=false"
    assert summary.loc["no-gate", "paper mean"] == pytest.approx(70.99)


def test_markdown_is_deterministic_and_names_each_variant():
    text = ablation_markdown(_rows(), "mrpd", VARIANTS)
    assert text == ablation_markdown(_rows().sample(frac=1.0, random_state=1), "mrpd", VARIANTS)
    # paired against the full method on the same 4 clouds: too few to be significant
    assert "| no-gate | no gate | gate=false | 100.0 | 37.5 | 25.0 | -25.0 | 0.51 | 1 | 71.0 |" in text
    assert "## transfer" in text and "n = 4 test clouds" in text
    assert column_name("mrpd", "full", "full") == "mrpd" and column_name("mrpd", "no-gate", "full") == "mrpd-no-gate"


def test_cli_lists_variants_and_reports_bad_names(capsys):
    assert main(["ablate", "mrpd", "--list"]) == 0
    out = capsys.readouterr().out
    assert "no-image" in out and "teachers=['point', 'text']" in out
    assert main(["ablate", "mrpd", "--variants", "nope", "--list"]) == 2
    assert "unknown mrpd ablation" in capsys.readouterr().err
    assert main(["ablate", "mprd", "--list"]) == 2
    assert "mrpd" in capsys.readouterr().err  # the close match


def test_every_variant_is_also_tested_against_the_matched_control():
    summary = ablation_summary(_rows(), "mrpd", VARIANTS, control="prompt-at").set_index("variant")
    assert list(summary.index) == ["none", "prompt-at", "full", "no-gate"]
    assert summary.loc["prompt-at", "mean robust"] == pytest.approx(25.0)
    assert summary.loc["prompt-at", "delta mean"] == pytest.approx(25.0 - 62.5)
    # full vs prompt-at per cloud: shares (1, 1, .5, 0) vs (1, 0, 0, 0); worst case survived by 2 vs 1 cloud
    assert 0 < summary.loc["full", "p mean control"] <= 1 and summary.loc["full", "p worst control"] == pytest.approx(1.0)
    assert np.isnan(summary.loc["prompt-at", "p mean control"]) and np.isnan(summary.loc["none", "p mean control"])
    without = ablation_summary(_rows(), "mrpd", VARIANTS)
    assert "prompt-at" not in set(without["variant"]) and without["p mean control"].isna().all()
    text = ablation_markdown(_rows(), "mrpd", VARIANTS, control="prompt-at")
    assert "p mean vs prompt-at | p worst vs prompt-at |" in text and "| prompt-at | matched control" in text
    header, rule = [line for line in text.splitlines() if line.startswith("| variant") or line.startswith("|---")]
    assert header.count("|") == rule.count("|")
    from defenses import build_defense
    assert type(build_defense("mrpd")).ablation_control == "prompt-at"


def test_mechanism_verdicts_compare_the_full_method_with_the_variant_lacking_it():
    text = mechanism_markdown(_rows(), "mrpd", VARIANTS, {"gate": "no-gate", "weighting": "fixed-weights"},
                              control="prompt-at")
    # full 62.5 vs no-gate 37.5 mean robust: +25.0 points, 4 clouds are too few to tell
    assert "| gate | `no-gate` | +25.0 | 0.51 | +25.0 | 1 | +0.0 | no detectable effect |" in text
    assert "| weighting | `fixed-weights` | - | - | - | - | - | not run |" in text
    assert "| all teachers (vs matched control) | `prompt-at` | +37.5 |" in text
    assert "n = 4 test clouds" in text
    assert "No finished adaptive ablation" in mechanism_markdown(_rows(), "mrpd", VARIANTS, {}, protocol="adaptive")
    from benchmark.ablate import _verdict
    assert (_verdict(2.0, 0.01), _verdict(-2.0, 0.01), _verdict(2.0, 0.2)) == ("helps", "hurts",
                                                                                "no detectable effect")
    for mechanism, variant in type(__import__("defenses").build_defense("mrpd")).mechanisms.items():
        assert variant in variants_of("mrpd"), mechanism


def test_a_run_wide_setting_labels_no_column():
    rows = _rows().assign(defense_variant="datasets.synthshapes.test_size=1024", attack_variant="")
    summary = ablation_summary(rows, "mrpd", VARIANTS, control="prompt-at").set_index("variant")
    assert summary.loc["full", "mean robust"] == pytest.approx(62.5) and "no-gate" in summary.index
    text = ablation_markdown(rows, "mrpd", VARIANTS, control="prompt-at")
    assert "profile `smoke` with `datasets.synthshapes.test_size=1024`" in text and "| no-gate |" in text
    mixed = pd.concat([_rows(), rows.iloc[:1]])  # one differing label: variants stay apart
    from benchmark.ablate import run_wide
    assert run_wide(mixed)[1] == ""


def test_a_variant_the_run_already_applies_is_recognised_as_the_full_method():
    from defenses import build_defense

    variants = variants_of("mrpd", ["adv-mix-0.5", "no-gate"])
    for base, expected in (({}, []), ({"adv_mix": 0.5}, ["adv-mix-0.5"])):
        params = {name: build_defense("mrpd", **{**base, **dict(a.changes)}).params() for name, a in variants.items()}
        assert same_as_full(params) == expected
