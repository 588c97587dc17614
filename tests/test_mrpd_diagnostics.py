"""The teacher-robustness table on planted answers: accuracy, rescue rate and drift known exactly."""
from __future__ import annotations

import pytest
import torch

from defenses.mrpd.diagnostics import CloudSet, Probe, probe_markdown, probe_table

BANK = torch.eye(3)


def mean_probe() -> Probe:
    return Probe("student", lambda x: x.mean(1), BANK, "mean of the points")


def first_probe() -> Probe:
    return Probe("teacher", lambda x: x[:, 0], BANK, "the first point only")


def planted() -> list[CloudSet]:
    labels = torch.tensor([0, 1, 2, 0])
    clean = BANK[labels].view(4, 1, 3).expand(4, 5, 3).clone()  # every point on its class axis
    adv = clean.clone()
    # clouds 0 and 1: every point but the first moved to the next class -> the mean flips, the first point does not
    for i in (0, 1):
        adv[i, 1:] = BANK[(labels[i] + 1) % 3]
    return [CloudSet("clean", clean, labels), CloudSet("attacked", adv, labels, clean="clean")]


def test_accuracy_rescue_and_drift_match_the_planted_answer():
    rows = probe_table([mean_probe(), first_probe()], planted(), reference="student")
    by = {(r["set"], r["probe"]): r for r in rows}
    assert by["clean", "student"]["accuracy"] == by["clean", "teacher"]["accuracy"] == 1.0
    assert by["attacked", "student"]["accuracy"] == 0.5 and by["attacked", "teacher"]["accuracy"] == 1.0
    # the student is wrong on clouds 0 and 1; the teacher is right on both
    assert by["attacked", "teacher"]["rescue"] == 1.0 and by["attacked", "teacher"]["rescued"] == 2
    assert by["attacked", "student"]["rescue"] is None and by["attacked", "student"]["reference_wrong"] == 2
    assert by["clean", "teacher"]["rescue"] is None  # the student makes no error there
    # drift: the teacher's embedding does not move; the student's moves on 2 of 4 clouds to (1, 4, 0) / sqrt(17)
    assert by["attacked", "teacher"]["drift"] == pytest.approx(1.0)
    assert by["attacked", "student"]["drift"] == pytest.approx((2 + 2 * 1 / 17 ** 0.5) / 4, abs=1e-6)
    assert by["clean", "student"]["drift"] is None


def test_the_markdown_has_one_row_per_set_in_each_table():
    probes = [mean_probe(), first_probe()]
    text = probe_markdown(probe_table(probes, planted(), reference="student"), probes, reference="student")
    assert text.count("| attacked |") == 3 and text.count("| clean |") == 2  # drift only for the attacked set
    assert "| attacked | 2 | 100.0 |" in text  # rescue: 2 student errors, all rescued


def test_bad_reference_and_orphan_sets_are_clear_errors():
    sets = planted()
    with pytest.raises(ValueError, match="reference probe 'victim'"):
        probe_table([mean_probe()], sets, reference="victim")
    orphan = CloudSet("orphan", sets[1].points[:2], sets[1].labels[:2], clean="clean")
    with pytest.raises(ValueError, match="orphan"):
        probe_table([mean_probe()], [sets[0], orphan], reference="student")
    with pytest.raises(ValueError, match=r"\[M, N, 3\]"):
        CloudSet("flat", torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))


def test_a_teacher_at_chance_is_named_in_a_warning_and_a_useful_one_is_not():
    from defenses.mrpd.training import warn_weak_teachers

    with pytest.warns(RuntimeWarning, match="the point teacher is right on only 5.0%") as caught:
        messages = warn_weak_teachers({"image": 0.91, "point": 0.05}, num_classes=40)
    assert len(messages) == 1 and len(caught) == 1 and "chance 2.5%" in messages[0]
    assert warn_weak_teachers({"image": 0.06, "point": 0.9}, num_classes=40) == []  # 6% is above twice chance
