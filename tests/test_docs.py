"""The README and docs/ (``benchmark.docs``): every number sits in a generated section rendered
from the files the code writes, the committed documents match those files, no number is typed
by hand outside them, every relative link resolves, and the README stays a five-minute read."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import benchmark.leaderboard  # noqa: F401  (registers the results' README sections)
from benchmark.docs import GENERATORS, check_docs, documents, register_section, render_sections, write_docs
from benchmark.docs.lint import broken_links, heading_anchors, measured_numbers, stray_numbers

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_documents_match_their_sources():
    assert check_docs(ROOT) == [], "run `bench docs` and commit the result"


def _project(tmp_path: Path) -> Path:
    (tmp_path / "benchmarks").mkdir()
    rows = [{"attack": "cw", "which": "before", "params": {"num_iter": 50}, "success": 0.5, "seconds": 10.0,
             "role": "strong"},
            {"attack": "cw", "which": "after", "params": {"num_iter": 300, "early_stop": True}, "success": 0.9,
             "seconds": 12.0, "role": "strong"}]
    (tmp_path / "benchmarks" / "attack_presets_default.json").write_text(json.dumps({
        "rows": rows, "num_clouds": 8, "victim": "v", "victim_score": "test accuracy 90.0%", "device": "cpu",
        "batch_size": 4, "threads": 2, "total_seconds": {"before": 10.0, "after": 12.0},
        "total_seconds_shared_attacks_after": 12.0}))
    (tmp_path / "README.md").write_text("# t\n<!-- begin generated: attack-presets -->\nstale 99%\n"
                                        "<!-- end generated: attack-presets -->\ntail\n")
    return tmp_path


def test_a_section_is_rewritten_from_its_file_and_drift_is_reported(tmp_path):
    root = _project(tmp_path)
    assert check_docs(root) == ["README.md"]
    assert write_docs(root) == ["README.md"]
    text = (root / "README.md").read_text()
    assert "stale" not in text and "| `cw` | strong | num_iter 50 | 50.0% | 10 | num_iter 300, early_stop True | 90.0% | 12 |" in text
    assert text.endswith("<!-- end generated: attack-presets -->\ntail\n") and check_docs(root) == []


def test_an_unknown_section_name_is_an_error(tmp_path):
    with pytest.raises(KeyError, match="unknown generated section"):
        render_sections("<!-- begin generated: nope -->\nx\n<!-- end generated: nope -->", tmp_path)


def _default_grid(tmp_path: Path) -> Path:
    """The leaderboard tests' small results file, relabelled as a `default` grid."""
    import pandas as pd

    from tests.test_leaderboard import write_results

    path = write_results(tmp_path / "results")
    frame = pd.read_csv(path, keep_default_na=False)
    frame["profile"] = "default"
    frame.to_csv(path, index=False)
    return tmp_path


def test_grid_sections_render_the_ranking_and_the_attacks_on_none(tmp_path):
    root = _default_grid(tmp_path)
    (root / "README.md").write_text("<!-- begin generated: leaderboard-headline -->\n"
                                    "<!-- end generated: leaderboard-headline -->\n"
                                    "<!-- begin generated: grid-attacks -->\n<!-- end generated: grid-attacks -->\n"
                                    "<!-- begin generated: leaderboard-adaptive -->\n"
                                    "<!-- end generated: leaderboard-adaptive -->\n")
    write_docs(root)
    text = (root / "README.md").read_text()
    assert "| 1 | srs | 50.0 [23.7, 76.3] | +20.0 (p=0.5) |" in text  # ranked by the worst case
    assert "| `pgd` | strong | 50.0% | 30.0% |" in text and "| `drop-100` | weak | 50.0% | 50.0% |" in text
    assert "Strong attacks below the 90% bar on `none`: `pgd` (50.0%)." in text
    assert "No committed `default` results under the adaptive protocol yet" in text
    assert check_docs(root) == []


def test_the_ablation_section_quotes_the_table_bench_ablate_wrote(tmp_path):
    folder = tmp_path / "results" / "ablations" / "mrpd"
    folder.mkdir(parents=True)
    (folder / "ablation.md").write_text("# mrpd ablations\n\nDataset `synthshapes`, n = 8.\n\n## transfer\n\n"
                                        "| variant | clean |\n|---|---:|\n| full | 90.0 |\n\n## adaptive\n")
    (tmp_path / "README.md").write_text("<!-- begin generated: ablation-mrpd -->\nold\n<!-- end generated: ablation-mrpd -->\n")
    write_docs(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "Dataset `synthshapes`, n = 8." in text and "| full | 90.0 |\n<!-- end" in text and "old" not in text


def test_the_teachers_section_quotes_the_tables_bench_teachers_wrote(tmp_path):
    from defenses.mrpd.diagnostics import CloudSet, Probe, probe_markdown, probe_table

    labels = torch.tensor([0, 1])
    clean = torch.eye(3)[labels].view(2, 1, 3).expand(2, 4, 3).clone()
    probes = [Probe("student", lambda x: x.mean(1), torch.eye(3), "mean")]
    rows = probe_table(probes, [CloudSet("test: clean", clean, labels)], reference="student")
    folder = tmp_path / "results" / "diagnostics" / "mrpd"
    folder.mkdir(parents=True)
    (folder / "teachers.md").write_text(probe_markdown(rows, probes, reference="student", intro="# title\n\nintro"))
    (tmp_path / "README.md").write_text("<!-- begin generated: teachers-mrpd -->\n<!-- end generated: teachers-mrpd -->\n")
    write_docs(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "| test: clean | 2 | 100.0 |" in text and "# title" not in text and "`student`: mean" in text


def test_the_before_after_section_pairs_each_set_of_the_two_teacher_reports(tmp_path):
    def report(student: float, rescue: float) -> dict:
        rows = [{"set": "test: cw", "probe": "student", "accuracy": student, "rescue": None},
                {"set": "test: cw", "probe": "image-6v", "accuracy": 0.9, "rescue": rescue}]
        return {"rows": rows}

    folder = tmp_path / "results" / "diagnostics" / "mrpd"
    folder.mkdir(parents=True)
    section = "<!-- begin generated: teachers-before-after-mrpd -->\n<!-- end generated: teachers-before-after-mrpd -->\n"
    (tmp_path / "README.md").write_text(section)
    write_docs(tmp_path)
    assert "Needs both" in (tmp_path / "README.md").read_text()  # says what is missing, does not fail
    (folder / "teachers_twin_setting.json").write_text(json.dumps(report(0.0, 0.5)))
    (folder / "teachers.json").write_text(json.dumps(report(0.25, 0.75)))
    write_docs(tmp_path)
    assert "| test: cw | 0.0 → 25.0 | 50.0 → 75.0 | – → – | – → – |" in (tmp_path / "README.md").read_text()


def test_the_training_section_shows_each_epoch_and_marks_the_kept_one(tmp_path):
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    meta = {"history": [{"val_clean": 0.5, "val_adv": 0.1}, {"val_clean": 0.6, "val_adv": 0.2}], "best_epoch": 1,
            "clean_epochs": 1, "reference_val_clean": 0.55}
    record = {"config": {"profile": "default", "defenses": {"mrpd": {"clean_tolerance": 0.02}}},
              "defenses": {"mrpd": {"meta": meta}, "prompt-at": {"meta": {**meta, "best_epoch": 0}}}}
    (runs / "20260101T000000Z-aaaaaa.json").write_text(json.dumps(record))
    (runs / "20260102T000000Z-bbbbbb.json").write_text(json.dumps({"config": {}, "defenses": {}}))  # no MRPD
    (tmp_path / "README.md").write_text("<!-- begin generated: training-mrpd -->\n<!-- end generated: training-mrpd -->\n")
    write_docs(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "20260101T000000Z-aaaaaa.json" in text and "is 55.0" in text
    assert "| 1 | 50.0 | 10.0 | **50.0** | **10.0** |" in text and "| 2 | **60.0** | **20.0** | 60.0 | 20.0 |" in text


def test_the_paired_section_compares_mrpd_its_control_and_none_on_the_same_clouds(tmp_path):
    from benchmark.store import encode_outcomes

    def rows(defense, clean, attacked):
        base = {"protocol": "transfer", "defense": defense, "status": "ok"}
        return [{**base, "attack": "clean", "attack_role": "", "outcomes": encode_outcomes(clean)},
                {**base, "attack": "cw", "attack_role": "strong", "outcomes": encode_outcomes(attacked)}]

    import pandas as pd

    n = 40
    frame = pd.DataFrame(rows("none", [True] * n, [False] * n) + rows("mrpd", [True] * n, [True] * 30 + [False] * 10)
                         + rows("prompt-at", [True] * n, [True] * 29 + [False] * 11))
    (tmp_path / "results").mkdir()
    frame.to_csv(tmp_path / "results" / "synthshapes.csv", index=False)
    (tmp_path / "README.md").write_text("<!-- begin generated: paired-mrpd -->\n<!-- end generated: paired-mrpd -->\n")
    write_docs(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "| transfer | `mrpd` vs `none` | 40 | +75.0 | <0.001* | +75.0 | <0.001* |" in text
    assert "| transfer | `mrpd` vs `prompt-at` | 40 | +2.5 | 1 | +2.5 | 1 |" in text
    assert "adaptive" not in text.split("|---|")[-1]  # no adaptive rows in this grid


def test_the_attack_overhead_section_tabulates_the_benchmark_json(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    data = {"torch": "2.x", "threads": 2, "batch": 16, "points": 1024, "repeats": 3,
            "models": {"student": {"iterations": 20, "attacks": {"pgd": {"ratio": 1.071},
                                                                 "advpc": {"ratio": 2.5, "ratio_vs_inherent": 1.104}}}}}
    (tmp_path / "benchmarks" / "attack_overhead.json").write_text(json.dumps(data))
    (tmp_path / "README.md").write_text("<!-- begin generated: attack-overhead -->\n<!-- end generated: attack-overhead -->\n")
    write_docs(tmp_path)
    assert "| `student` (20 iterations) | 1.07 | 2.50 | 1.10 |" in (tmp_path / "README.md").read_text()
    # with the 1-iteration calls: a row splitting each call into per iteration and once per call
    data["models"]["student"]["attacks"]["pgd"] |= {"per_iteration_ratio": 1.04, "once_seconds": 0.051}
    (tmp_path / "benchmarks" / "attack_overhead.json").write_text(json.dumps(data))
    write_docs(tmp_path)
    assert "| per iteration / once per call (s) | 1.04 / 0.05 | – | – |" in (tmp_path / "README.md").read_text()


def test_the_thread_section_shows_each_run(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    data = {"step": "bench train", "cpus": 2, "hog_threads": 2, "ratio_forced_over_automatic": 2.27,
            "runs": {"alone": {"seconds": 10.0, "threads": "2 (2 usable CPUs)"},
                     "busy, automatic": {"seconds": 24.1, "threads": "1 (...)", "hog_products_per_s": 36.0}}}
    (tmp_path / "benchmarks" / "thread_contention.json").write_text(json.dumps(data))
    (tmp_path / "README.md").write_text("<!-- begin generated: thread-contention -->\n<!-- end generated: thread-contention -->\n")
    write_docs(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "| alone | 10.0 | 2 (2 usable CPUs) | – |" in text and "| busy, automatic | 24.1 | 1 (...) | 36.0 |" in text
    assert "2.27x" in text


def test_sections_are_registered_once_and_unknown_names_say_where_they_come_from(tmp_path):
    assert {"attack-presets", "ablation-mrpd", "leaderboard-headline", "grid-attacks"} <= set(GENERATORS)
    with pytest.raises(ValueError, match="already registered"):
        register_section("grid-attacks")(lambda root: "")
    text = "<!-- begin generated: no-such -->\nx\n<!-- end generated: no-such -->\n"
    with pytest.raises(KeyError, match="benchmark.leaderboard"):
        render_sections(text, tmp_path)


def test_the_mrpd_selection_section_marks_the_chosen_candidate(tmp_path):
    import json

    from benchmark.docs.mrpd import selection_mrpd

    assert "No committed selection" in selection_mrpd(tmp_path)
    (tmp_path / "benchmarks").mkdir()
    candidate = {"val_clean": 0.9, "val_robust": {"a": 0.5}, "val_robust_mean": 0.5, "epochs_run": 7, "best_epoch": 2,
                 "drift_at_best": {"point": 0.5}, "victim_attack_success": 0.6,
                 "diagnostics": {"rescue_rate": {"image/adv": 0.8, "point/clean": 0.7}}}
    (tmp_path / "benchmarks" / "mrpd_selection.json").write_text(json.dumps({
        "n_val": 10, "tolerance": 0.02, "student": {"clean": 0.92, "a": 0.4}, "chosen": "x",
        "candidates": {"x": candidate, "y": {**candidate, "victim_attack_success": None}}}))
    text = selection_mrpd(tmp_path)
    assert "| **x** | 90.0 | 50.0 | 50.0 | 7 (3) | 0.50 | 60.0 | 80.0 / 70.0 |" in text
    assert "| undefended student | 92.0 | 40.0 | 40.0 |" in text and "| y |" in text


# --------------------------------------------------------------------------- the committed documents


def _section(root: Path, name: str) -> str:
    """Render the generated section ``name`` in a README under ``root``; returns the README."""
    (root / "README.md").write_text(f"<!-- begin generated: {name} -->\n<!-- end generated: {name} -->\n")
    write_docs(root)
    return (root / "README.md").read_text()


def test_the_readme_is_a_five_minute_read_that_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 150
    first_block = text.split("```")[1]
    assert text.index("```") < 100  # right under the title
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/bench run --defense mrpd --attack all" in first_block
    assert "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -q" in first_block
    assert "pip install -q -e '.[test]' && .venv/bin/python -m pytest -q" in ci  # CI runs what the README says


def test_every_relative_link_in_the_readme_and_docs_resolves():
    assert broken_links(ROOT) == []


def test_no_measured_number_is_typed_outside_a_generated_section():
    assert stray_numbers(ROOT) == [], "move the number into a generated section (benchmark/docs/) or drop it"


def test_every_registered_section_is_shown_in_a_document_and_no_stale_text_remains():
    texts = "\n".join(p.read_text() for p in documents(ROOT))
    assert [n for n in GENERATORS if f"<!-- begin generated: {n} -->" not in texts] == []
    assert [s for s in ("v0.3", "(being built)", "later the runner") if s in texts] == []


@pytest.mark.parametrize("line, found", [
    ("the grid ran in 1,777 s (29.6 min)", ["1,777", "29.6 min"]),
    ("zoo training 698 s; 2.7 s for 1,000 clouds", ["698 s", "2.7 s", "1,000"]),
    ("**96.3%** test accuracy, **2.8x** faster, on 256 test clouds", ["96.3%", "2.8x", "256 test clouds"]),
    ("on 64 clouds after 12 epochs, 9.7 k parameters, 512 MiB", ["64 clouds", "12 epochs", "9.7 k", "512 MiB"]),
    ("ModelNet40, k=5, p < 0.05, float32, v1.2.3, `--limit 64`, top-1, sections 0-2, 16 x 1024", []),
    ("95% Wilson intervals; strong attacks under 90% on `none`; [link](results/n256_12s.png)", []),
])
def test_the_number_check_catches_typed_measurements_and_spares_names(line, found):
    assert measured_numbers(line) == found


def test_the_number_check_skips_generated_sections_and_reports_the_line(tmp_path):
    (tmp_path / "README.md").write_text("# t\n<!-- begin generated: x -->\n99.0% 12 s\n<!-- end generated: x -->\n"
                                        "took 12 s\n")
    assert stray_numbers(tmp_path) == ["README.md:5: '12 s' in 'took 12 s'"]


def test_the_link_check_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## The `default` presets\n\n```\n# not a heading\n```\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md) [ok](docs/a.md#the-default-presets) [ok](#t) [web](https://x.org/nope) `[no](code.md)`\n"
        "# t\n[gone](docs/b.md) [bad anchor](docs/a.md#not-a-heading) ![img](missing.png)\n")
    assert broken_links(tmp_path) == ["README.md:3: docs/b.md", "README.md:3: docs/a.md#not-a-heading",
                                      "README.md:3: missing.png"]
    assert heading_anchors("# A\n## A\n## Plug-ins: ten lines\n") == {"a", "a-1", "plug-ins-ten-lines"}


# --------------------------------------------------------------------------- the measurement sections


def _write(root: Path, relative: str, data: dict) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_the_defense_cost_section_ranks_defenses_by_ratio_and_reports_failures(tmp_path):
    assert "python benchmarks/defense_cost.py" in _section(tmp_path, "defense-cost")
    base = {"status": "ok", "kind": "preprocess", "randomized": False, "gradient": "bpda", "victim_params": 1_233_027,
            "victim_weights": "shared"}
    _write(tmp_path, "benchmarks/defense_cost.json", {
        "profile": "default", "victim": "v", "device": "cpu", "torch": "2.x", "threads": 2, "batch": 16, "points": 1024,
        "repeats": 5, "defenses": {"slow": {**base, "ratio": 28.76, "extra_params": 814_307, "gflop_ratio": 10.63},
                                   "mrpd": {**base, "kind": "model", "gradient": "exact", "ratio": 1.04, "extra_params": 9728},
                                   "broken": {**base, "status": "failed", "error": "no weights", "ratio": None}}})
    text = _section(tmp_path, "defense-cost")
    assert text.index("`mrpd`") < text.index("`slow`") < text.index("`broken`")
    assert "| `mrpd` | model | exact | 1.04 | – | 9.7 k | shared |" in text and "| 28.76 | 10.6 | 814.3 k |" in text
    assert "failed: no weights" in text and "(1.23 M parameters)" in text


def test_the_end_to_end_section_shows_each_run_against_its_goal_and_its_biggest_items(tmp_path):
    items = [{"item": f"attack a{i}", "seconds": float(i)} for i in range(5)]
    run = {"command": ["python", "-m", "benchmark", "run", "--defense", "mrpd", "--attack", "all", "--out", "/tmp/x",
                       "--no-progress"], "wall_seconds": 20.6, "cells": 24, "test_clouds": 256, "items": items,
           "goal": {"seconds": 180, "met": True}}
    _write(tmp_path, "benchmarks/end_to_end.json", {
        "profile": "default", "cores": 2, "goals": {"cold_seconds": 1800, "warm_seconds": 180},
        "git_commit": "0123456789ab",
        "runs": {"warm mrpd": run, "cold mrpd": {**run, "wall_seconds": 2000.0, "goal": {"seconds": 1800, "met": False},
                                                 "items": [], "git_commit": "fedcba987654",
                                                 "launched": "2026-12-05T02:54:46+00:00"}}})
    text = _section(tmp_path, "end-to-end")
    assert "| warm mrpd | `bench run --defense mrpd --attack all` | 256 | 24 | 20.6 | <= 180 | yes | `0123456` | – |" \
        in text  # a run without its own commit was measured at the file's
    assert "| cold mrpd |" in text and "| 2000.0 | <= 1800 | no | 2026-12-05 at `fedcba9` |" in text
    assert "| warm mrpd | attack a4 | 4 |" in text and "attack a1 |" not in text  # the three biggest only
    # cold first, then the warm run of the same command, then warm all, whatever the file's order
    # (end_to_end.py --merge appends re-measured runs)
    runs = {"warm all": run, "warm mrpd": run, "cold mrpd": run}
    _write(tmp_path, "benchmarks/end_to_end.json", {"profile": "default", "cores": 2, "goals": {}, "runs": runs})
    text = _section(tmp_path, "end-to-end")
    assert text.index("| cold mrpd |") < text.index("| warm mrpd |") < text.index("| warm all |")


def test_the_scaling_section_tabulates_both_sweeps_and_the_growth(tmp_path):
    runs = [{"model": "m", "attack": "pgd", "points": n, "batch": b, "seconds_per_iter": 0.01 * n / 1024 * b / 8,
             "memory_mib": float(n // 64 * b // 8), "memory_kind": "ru_maxrss"}
            for n, b in ((1024, 8), (2048, 8), (1024, 4), (1024, 16))]
    growth = {"m": {"pgd": {"points": {"time": {"overall": 2.0}, "memory": {"overall": 2.0}},
                            "batch": {"time": {"overall": 2.0}, "memory": {"overall": 1.5}}}}}
    _write(tmp_path, "benchmarks/scaling.json", {"device": "cpu", "threads": 2, "iterations": 5, "repeats": 2,
                                                 "runs": runs, "growth": growth})
    text = _section(tmp_path, "scaling")
    assert "|  | N 1024 | N 2048 | B 4 | B 8 | B 16 |" in text
    assert "| `pgd` s / iteration | 0.010 | 0.020 | 0.005 | 0.010 | 0.020 |" in text
    assert "| `pgd` | 2.00 | 2.00 | 2.00 | 1.50 |" in text and "at batch 8" in text


def test_the_data_load_teacher_cache_and_difficulty_sections_read_their_files(tmp_path):
    load = {"files": 2000, "sampling": "fps", "num_points": 1024, "first_load_seconds": 18.88, "cached_load_seconds": 0.02,
            "phases": {"parse_share": 0.132}, "goal_seconds": 180, "goal_met": True}
    _write(tmp_path, "benchmarks/data_load_2000_after.json", load)
    assert "| `data_load_2000_after.json` | 2,000 | fps | 1024 | 18.9 | 0.02 | 13% | <= 180 | yes |" in _section(
        tmp_path, "data-load")
    _write(tmp_path, "benchmarks/teacher_cache.json", {
        "profile": "default", "torch": "2.x", "threads": 2, "training_clouds": 64, "points": 1024, "warm_epoch_s": 10.0,
        "cold_epoch_s": 30.0, "ratio": 3.0, "image_teacher_pass_s": 2.0, "point_teacher_pass_s": 18.0,
        "feature_load_s": 0.008})
    text = _section(tmp_path, "teacher-cache")
    assert "| MRPD epoch, embedded teachers running (cold) | 30.0 | **3.0x** |" in text and "ViT" not in text
    _write(tmp_path, "benchmarks/synthshapes_difficulty.json", {
        "args": {"epochs": 3, "train_size": 64, "test_size": 32, "num_points": 256, "jitter": 0.0, "seed": 0},
        "test_accuracy": 0.9, "per_class": {"a": 1.0, "b": 0.5, "c": 0.75}, "generation_seconds": 1.0,
        "training_seconds": 2.0, "torch": "2.x", "threads": 2})
    text = _section(tmp_path, "synthshapes-difficulty")
    assert "**90.0%** on 32 test clouds" in text and "1 of 3 classes at 100%; the others, hardest first: b 50.0%, c 75.0%." in text


def test_the_defense_training_section_takes_each_defense_from_the_newest_run_that_trained_it(tmp_path):
    def record(meta: dict) -> dict:
        return {"config": {"profile": "default"}, "defenses": {"if-defense": {"meta": meta}, "none": {"meta": {}}}}

    trained = {"seconds": 124.3, "cached": False, "epochs": 1, "iou": 0.527, "iou_all_inside": 0.048, "iou_clouds": 32}
    _write(tmp_path, "results/runs/20260101T000000Z-aaaaaa.json", record(trained))
    _write(tmp_path, "results/runs/20260102T000000Z-bbbbbb.json", record({**trained, "cached": True}))  # its training run
    text = _section(tmp_path, "defense-training")
    assert "| `if-defense` | `20260101T000000Z-aaaaaa.json` (default) | 124 | 1 | – | – | occupancy IoU 0.53 on 32" in text
    assert "`none`" not in text
    # the newest run used a model trained elsewhere (not in a committed run): that model, cited by the run that loaded it
    _write(tmp_path, "results/runs/20260103T000000Z-cccccc.json", record({**trained, "cached": True, "seconds": 99.0}))
    text = _section(tmp_path, "defense-training")
    assert "| `if-defense` | `20260103T000000Z-cccccc.json` (default, loaded from the cache) | 99 | 1 |" in text


def test_the_attack_settings_section_shows_what_each_profile_changes_from_the_registered_defaults(tmp_path):
    text = _section(tmp_path, "attack-settings")
    row = next(line for line in text.splitlines() if line.startswith("| `pgd` |"))
    assert "budget 0.08" in row and "steps 20" in row  # registered defaults
    assert row.rstrip(" |").endswith("steps 10")  # what `default` runs instead (benchmark/core/profiles/default.yaml)


def test_the_training_stability_section_shows_each_kernel_path_and_the_spread(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    runs = [{"epochs": e, "kernel": k, "env": env, "test_accuracy": acc, "val_accuracy": 0.9, "best_epoch": e,
             "sha256": sha, "seconds": 80.4, "val_by_epoch": [0.5, 0.9]}
            for e, k, env, acc, sha in [(12, "default", {}, 0.55, "aaa"), (12, "avx2", {"MKL_CBWR": "AVX2"}, 0.68, "bbb"),
                                        (30, "default", {}, 0.934, "ccc"), (30, "avx2", {"MKL_CBWR": "AVX2"}, 0.938, "ddd")]]
    shared = {"profile": "default", "model": "point-transformer-student", "cores": 2, "cpu": "x86_64",
              "processor": "", "clip": {"sha256": "c0a6", "test_zero_shot_accuracy": 0.85}, "runs": runs,
              "recipes": {"12": {"spread": 0.13}, "30": {"spread": 0.004}}}
    (tmp_path / "benchmarks" / "training_stability.json").write_text(json.dumps(shared))
    (tmp_path / "README.md").write_text("<!-- begin generated: training-stability -->\n"
                                        "<!-- end generated: training-stability -->\n")
    write_docs(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert ("| 12 | default: `(machine default)` | `c0a6` (85.0%) | 55.0% | 90.0% | 50 → 90 | 12 | `aaa` | 80 "
            "| 13.0 points |" in text)
    assert "| 30 | avx2: `MKL_CBWR=AVX2` | `c0a6` (85.0%) | 93.8% |" in text and "0.4 points" in text
    assert "with the same CLIP for every run" in text and "retrained" not in text
    chain = {**shared, "threads": 2, "clips": {"default": {"sha256": "c0a6", "test_zero_shot_accuracy": 0.85},
                                 "avx2": {"sha256": "c7b6", "test_zero_shot_accuracy": 0.83}}}
    del chain["clip"]
    (tmp_path / "benchmarks" / "training_stability_chain.json").write_text(json.dumps(chain))
    write_docs(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "the CLIP retrained under each kernel path too" in text and "2 cores, 2 threads each" in text
    assert "| 12 | avx2: `MKL_CBWR=AVX2` | `c7b6` (83.0%) | 68.0% |" in text


def _rendered(root: Path, section: str) -> str:
    """A README holding only ``section``, generated from the files under ``root``: its text."""
    (root / "README.md").write_text(f"<!-- begin generated: {section} -->\n<!-- end generated: {section} -->\n")
    write_docs(root)
    return (root / "README.md").read_text()


def test_the_training_budget_section_shows_each_recipe_against_the_profile_s(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    runs = [{"epochs": e, "test_accuracy": t, "val_accuracy": v, "best_epoch": e, "val_by_epoch": [0.5, v],
             "seconds": s, "val_drop": d, "sha256": "aaa"}
            for e, t, v, s, d in [(3, 0.80, 0.84, 90.2, 0.025), (6, 0.85, 0.865, 181.0, 0.0)]]
    data = {"profile": "default", "cores": 2, "git_commit": "abcdef123", "launched": "2026-12-05T12:00:00+00:00",
            "models": {"clip": {"profile_epochs": 6, "score": "zero-shot accuracy", "runs": runs}}}
    (tmp_path / "benchmarks" / "training_budget.json").write_text(json.dumps(data))
    text = _rendered(tmp_path, "training-budget")
    assert "| clip | 3 | 90 | zero-shot accuracy | 84.0% (3) | -2.5 pt | 80.0% | 50 84 |" in text
    assert "| clip | 6 (profile) | 181 | zero-shot accuracy | 86.5% (6) | – | 85.0% | 50 86 |" in text
    assert "2026-12-05 at `abcdef1`" in text
    assert "lost least is clip at 3 epochs (-2.5 points" in text and "took 181 s of training" in text


def test_the_warm_floor_prices_the_warm_grid_at_the_measured_and_the_gflop_ratios(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    runs = {"goals": {"warm_seconds": 180},
            "runs": {"warm all": {"cells": 6, "test_clouds": 20, "items": [{"eval_seconds": 7.0}, {"seconds": 1}]}}}
    defense = {"status": "ok", "victim_seconds": 0.5}
    cost = {"batch": 10, "defenses": {"none": {**defense, "ratio": 1.0, "gflop_ratio": 1.0},
                                      "slow": {**defense, "ratio": 4.0, "gflop_ratio": 2.0},
                                      "broken": {"status": "failed"}}}
    (tmp_path / "benchmarks" / "end_to_end.json").write_text(json.dumps(runs))
    (tmp_path / "benchmarks" / "defense_cost.json").write_text(json.dumps(cost))
    text = _rendered(tmp_path, "warm-floor")
    # 2 batches x 3 cells per defense x 0.5 s = 3 s per unit of ratio: (1 + 4) x 3 = 15 s, floor (1 + 2) x 3 = 9 s
    assert "costs **15 s** at the measured ratios" in text and "would still cost **9 s**" in text
    assert "measured 7 s of classifying" in text and "goal of 180 s" in text
    assert "| slow | 4.00 | 2.00 | 12 | 6 |" in text and "broken" not in text
    assert "arithmetic rate" not in text  # without restoration_profile.json
    part = {"within_previous": False, "calls": 1}
    profile = {"victim_seconds": 0.5, "victim_gflop": 50.0,  # 100 GFLOP/s
               "defenses": {"slow": {"status": "ok", "parts": [
                   {**part, "part": "wide", "gflop": 40.0, "total_seconds": 0.2},   # 200 GFLOP/s
                   {**part, "part": "narrow", "gflop": 5.0, "total_seconds": 0.5},  # 10 GFLOP/s
                   {**part, "part": "search", "gflop": 0.0, "total_seconds": 0.1},  # computes nothing: no rate
                   {**part, "part": "of which", "gflop": 1.0, "total_seconds": 0.1, "within_previous": True}]}}}
    (tmp_path / "benchmarks" / "restoration_profile.json").write_text(json.dumps(profile))
    text = _rendered(tmp_path, "warm-floor")
    assert "(slow: wide, 2.00x the victim's) every defense would classify the warm grid in 4 s" in text  # 9 s / 2
    assert "| slow: wide | 200 | 2.00 |" in text and "| slow: narrow | 10 | 0.10 |" in text
    assert "search" not in text and "of which" not in text
