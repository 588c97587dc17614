"""The on-demand benchmark scripts' pure helpers (the scripts themselves are run by hand, not in tests)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_end_to_end_merge_keeps_the_runs_not_measured_again_with_their_own_commit(tmp_path):
    merge = _script("end_to_end").merge_reports
    old = {"profile": "default", "overrides": [], "git_commit": "aaaa", "success_none": {"run": "warm all"},
           "runs": {"cold mrpd": {"wall_seconds": 1500.0}, "warm all": {"wall_seconds": 760.0, "git_commit": "bbbb"}}}
    path = tmp_path / "end_to_end.json"
    path.write_text(json.dumps(old))
    new = {"profile": "default", "overrides": [], "git_commit": "cccc",
           "runs": {"warm all": {"wall_seconds": 738.0, "git_commit": "cccc"}}}
    merged = merge(path, new)
    assert merged["runs"]["warm all"] == {"wall_seconds": 738.0, "git_commit": "cccc"}  # re-measured: replaced
    assert merged["runs"]["cold mrpd"] == {"wall_seconds": 1500.0, "git_commit": "aaaa"}  # kept, with the file's commit
    assert "cold mrpd" in merged["how"] and merged["success_none"] == {"run": "warm all"}
    assert merge(tmp_path / "missing.json", new) is new


def test_end_to_end_merge_refuses_another_profile(tmp_path):
    path = tmp_path / "end_to_end.json"
    path.write_text(json.dumps({"profile": "paper", "overrides": [], "runs": {}}))
    with pytest.raises(SystemExit, match="profile"):
        _script("end_to_end").merge_reports(path, {"profile": "default", "overrides": [], "runs": {}})


def test_mrpd_selection_candidates_spell_out_their_adversarial_half():
    """A candidate must mean the same recipe whatever the profile currently chooses."""
    candidates = _script("mrpd_selection").CANDIDATES
    for name, overrides in candidates.items():
        keys = {o.split("=", 1)[0].removeprefix("defenses.mrpd.") for o in overrides}
        assert {"adv_attack", "adv_targeted", "adv_budget", "adv_mix"} <= keys, name
    assert "defenses.mrpd.adv_targeted=null" in candidates["paper pgd (targeted 0.08)"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_scaling_resets_the_peak_resident_set_before_a_call():
    """A large allocation freed before the measured call no longer counts in the call's peak."""
    scaling = _script("scaling")
    block = bytearray(200 * 2**20)
    block[:: 4096] = b"\1" * len(block[:: 4096])  # touch every page: the peak now holds 200 MiB
    del block
    assert scaling._reset_peak_rss()
    rss, peak = scaling._proc_status_mib("VmRSS"), scaling._proc_status_mib("VmHWM")
    assert rss is not None and peak is not None and peak - rss < 50


def test_training_budget_recipes_are_distinct_cheapest_first_and_end_at_the_profile_s():
    budget = _script("training_budget")
    assert budget.recipes(6, [0.5, 0.75]) == [3, 4, 6]
    assert budget.recipes(30, [0.75, 0.5, 1.0, 0.0]) == [15, 22, 30]  # fractions outside (0, 1) ignored
    assert budget.recipes(1, [0.5]) == [1]  # never zero epochs
    assert budget.profile_epochs("default", "point-transformer-student") >= 1


def test_training_budget_records_each_recipe_against_the_profile_s(tmp_path, monkeypatch):
    """The script's bookkeeping, with training stubbed: which base each model trains from, the
    validation drop and seconds saved against the profile's recipe, the launch stamp."""
    budget = _script("training_budget")
    bases = []

    def fake_train(base, epochs, kernel, profile, model):
        bases.append((model, base.name))
        return {"epochs": epochs, "val_accuracy": 0.5 + epochs / 100, "test_accuracy": 0.5, "best_epoch": epochs,
                "val_by_epoch": [0.5], "seconds": 10.0 * epochs, "sha256": "x"}

    monkeypatch.setattr(budget, "prepare_base", lambda base, source, profile: {"sha256": "c"})
    monkeypatch.setattr(budget, "train", fake_train)
    monkeypatch.setattr(budget, "profile_epochs", lambda profile, model: 6)
    out = tmp_path / "budget.json"
    assert budget.main(["--models", "clip,point-transformer-student", "--fractions", "0.5",
                        "--cache-dir", str(tmp_path / "none"), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert bases == [("clip", "bare"), ("clip", "bare"), ("point-transformer-student", "with-clip"),
                     ("point-transformer-student", "with-clip")]  # the CLIP trains from scratch; the others read it
    clip = data["models"]["clip"]
    assert clip["score"] == "zero-shot accuracy" and data["models"]["point-transformer-student"]["score"] == "accuracy"
    assert [(r["epochs"], r["val_drop"], r["seconds_saved"]) for r in clip["runs"]] == [(3, 0.03, 30.0), (6, 0.0, 0.0)]
    assert data["launched"] and data["fractions"] == [0.5]
