"""Generated README sections (``benchmark.docs``): rendered from the files the code writes, and
the committed README must match them (a number typed by hand would drift)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import benchmark.leaderboard  # noqa: F401  (registers the results' README sections)
from benchmark.docs import GENERATORS, check_docs, register_section, render_sections, write_docs

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

    from benchmark.docs import selection_mrpd

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
