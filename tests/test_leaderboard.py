"""leaderboard.md from a small hand-written results file; `bench plot` figures; `bench run --sweep`."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core.config import resolve_config
from benchmark.leaderboard import GENERATED_NOTICE, render_leaderboard, write_leaderboard
from benchmark.store import ResultStore, encode_outcomes

PGD = json.dumps({"budget": 0.08, "norm": "l2", "seed": 0, "steps": 20}, sort_keys=True)
DROP = json.dumps({"num_drop": 100, "seed": 0}, sort_keys=True)
SOR = json.dumps({"alpha": 1.1, "k": 2}, sort_keys=True)


def bits(text: str) -> str:
    return encode_outcomes([c == "1" for c in text])


#: (defense, attack, per-sample outcomes of 10 clouds or "failed")
CELLS = [
    ("none", "clean", "1111111110"), ("none", "pgd", "1110000000"), ("none", "drop-100", "1111100000"),
    ("sor", "clean", "1111111100"), ("sor", "pgd", "1111110000"), ("sor", "drop-100", "failed"),
    ("srs", "clean", "1111111000"), ("srs", "pgd", "1111100000"), ("srs", "drop-100", "0111111000"),
]


def write_results(folder: Path, cells=CELLS, reverse: bool = False, n: int = 10,
                  roles: dict | None = None, distances: dict | None = None) -> Path:
    """A results CSV as `bench run` writes it (only the columns the leaderboard reads)."""
    roles = {"pgd": "strong", "drop-100": "weak"} if roles is None else roles
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for defense, attack, outcome in cells:
        row = {"dataset": "synthshapes", "profile": "smoke", "protocol": "transfer", "victim": "pointnet-lite",
               "source": "" if attack == "clean" else "pointnet-lite", "defense": defense, "attack": attack,
               "seed": 0, "n": n, "defense_params": SOR if defense == "sor" else "{}",
               "attack_params": {"pgd": PGD, "drop-100": DROP}.get(attack, ""), "dataset_fingerprint": "abc123",
               "victim_hash": "feedbeef", "cost_ratio": {"none": 1.0, "sor": 1.5, "srs": 1.25}.get(defense, 1.0),
               "run_id": "run-1", "pcrb_version": "0.1.0", "device": "cpu", "attack_role": roles.get(attack, ""),
               "distances": (distances or {}).get(attack, "")}
        if outcome == "failed":
            row.update(status="failed", error="RuntimeError: out of points")
        else:
            k = outcome.count("1")
            row.update(status="ok", correct=k, accuracy=k / n, outcomes=bits(outcome), error="",
                       attack_success=0.5 if attack != "clean" else "")
        rows.append(row)
    if reverse:
        rows.reverse()
    path = folder / "synthshapes.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_leaderboard_ranks_defenses_by_worst_case_over_the_strong_attacks_with_wilson_intervals(tmp_path):
    write_results(tmp_path / "results")
    text = write_leaderboard(tmp_path / "results", tmp_path / "leaderboard.md").read_text()
    assert text.startswith(GENERATED_NOTICE + "\n")
    assert "## synthshapes · transfer · victim pointnet-lite · profile smoke · n=10 · seed 0" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0] == "| rank | defense | worst case (strong) | vs none | avg robust | clean | pgd | drop-100 |"
    # worst case over the strong pgd: srs 50 > none 30; sor is incomplete (drop-100 failed): last.
    # vs none: srs survives 2 clouds none does not and none no cloud srs does not: exact p = 2 / 2^2
    assert table[1] == ("| 1 | **srs** | 50.0 [23.7, 76.3] | +20.0 (p=0.5) | 55.0 | 70.0 [39.7, 89.2] | "
                        "50.0 [23.7, 76.3] | 60.0 [31.3, 83.2] |")
    assert table[2] == ("| 2 | **none** | 30.0 [10.8, 60.3] | – | 40.0 | 90.0 [59.6, 98.2] | 30.0 [10.8, 60.3] | "
                        "50.0 [23.7, 76.3] |")
    assert table[3] == ("| 3 | **sor** | 60.0 [31.3, 83.2] † | +30.0 (p=0.25) | 60.0 † | 80.0 [49.0, 94.3] | "
                        "60.0 [31.3, 83.2] | failed |")
    assert "weak ones (`drop-100`)" in text


def test_significant_differences_are_marked_and_min_norm_distances_give_a_median(tmp_path):
    from benchmark.store import encode_distances

    n = 40
    strong_none, strong_def = "1" * 5 + "0" * 35, "1" * 25 + "0" * 15  # 20 discordant clouds, all one way
    distances = [0.1 * (i + 1) for i in range(n)]
    cells = [("none", "clean", "1" * n), ("none", "pgd", strong_none), ("none", "fmn", "0" * n),
             ("srs", "clean", "1" * n), ("srs", "pgd", strong_def), ("srs", "fmn", "1" * 30 + "0" * 10)]
    write_results(tmp_path / "results", cells, n=n, roles={"pgd": "strong", "fmn": "min-norm"},
                  distances={"fmn": encode_distances(distances)})
    text = write_leaderboard(tmp_path / "results", tmp_path / "leaderboard.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0] == "| rank | defense | worst case (strong) | vs none | avg robust | median min L2 | clean | pgd | fmn |"
    srs = table[1].split(" | ")
    assert srs[1] == "**srs**" and srs[3] == "+50.0 (p=<0.001)*" and srs[7].endswith("*")  # pgd cell marked
    # none: every fmn example fools it: median of 0.1 .. 4.0 = 2.05; srs: 30 clouds never fooled -> inf
    assert table[2].split(" | ")[5] == "2.050" and srs[5] == "∞"
    assert "avg robust" in text and "median min L2" in text


def test_leaderboard_header_names_every_parameter_and_the_command(tmp_path):
    write_results(tmp_path / "results")
    text = write_leaderboard(tmp_path / "results", tmp_path / "leaderboard.md").read_text()
    assert f"| pgd | `{json.dumps(json.loads(PGD), sort_keys=True)}` | 50.0 |" in text
    assert f"| drop-100 | `{json.dumps(json.loads(DROP), sort_keys=True)}` |" in text
    assert f"| sor | `{json.dumps(json.loads(SOR), sort_keys=True)}` |" in text
    assert "dataset fingerprint `abc123`" in text and "seed 0" in text
    assert ("bench run --profile smoke --dataset synthshapes --victim pointnet-lite --defense none,sor,srs "
            "--attack drop-100,pgd --protocol transfer --seed 0 --limit 10") in text


def test_failed_cells_are_shown_as_failed_with_their_error(tmp_path):
    write_results(tmp_path / "results")
    text = write_leaderboard(tmp_path / "results", tmp_path / "leaderboard.md").read_text()
    assert "| failed |" in text
    assert "- `sor` × `drop-100`: RuntimeError: out of points" in text


def test_leaderboard_is_byte_identical_across_generations_and_row_orders(tmp_path):
    write_results(tmp_path / "a")
    write_results(tmp_path / "b", reverse=True)
    first = write_leaderboard(tmp_path / "a", tmp_path / "one.md").read_bytes()
    again = write_leaderboard(tmp_path / "a", tmp_path / "two.md").read_bytes()
    shuffled = write_leaderboard(tmp_path / "b", tmp_path / "three.md").read_bytes()
    assert first == again == shuffled


def test_reproduce_command_carries_the_overrides_of_the_run_record(tmp_path):
    write_results(tmp_path / "results")
    config = resolve_config("smoke", overrides=["attacks.pgd.steps=400"], flags={"victim": "pointnet-lite"}).to_dict()
    config["limit"] = None  # the whole test split
    (tmp_path / "results" / "runs").mkdir()
    (tmp_path / "results" / "runs" / "run-1.json").write_text(json.dumps({"run_id": "run-1", "config": config}))
    text = render_leaderboard(ResultStore(tmp_path / "results").read(),
                              {"run-1": {"run_id": "run-1", "config": config}})
    assert "--protocol transfer --seed 0 --set attacks.pgd.steps=400\n" in text  # no --limit: n is the whole split
    assert text == write_leaderboard(tmp_path / "results", tmp_path / "lb.md").read_text().replace(
        "Source: `synthshapes.csv`, 9 rows.\n\n", "")


def test_bench_leaderboard_command_writes_the_file(tmp_path):
    write_results(tmp_path / "results")
    out = tmp_path / "docs" / "leaderboard.md"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "leaderboard", "--results", str(tmp_path / "results"),
                           "--out", str(out)], check=False, capture_output=True, text=True, env={**os.environ, "PCRB_NO_TUNE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == write_leaderboard(tmp_path / "results", tmp_path / "again.md").read_text()


def test_bench_leaderboard_without_results_names_the_fix(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmark", "leaderboard", "--results", str(tmp_path / "nothing")],
                          check=False, capture_output=True, text=True, env={**os.environ, "PCRB_NO_TUNE": "1"})
    assert proc.returncode == 2
    assert "does not exist; run `bench run` first" in proc.stderr


# ------------------------------------------------------------------------------------------ plots
def test_plot_without_matplotlib_names_the_install_command(tmp_path):
    write_results(tmp_path / "results")
    code = ("import sys; sys.modules['matplotlib'] = None; from benchmark.cli import main; "
            f"sys.exit(main(['plot', '--results', {str(tmp_path / 'results')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "pip install 'pcrb[plots]'" in proc.stderr


def test_plot_draws_accuracy_bars_and_sweep_curves(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmark.plots import make_plots, sweep_out_dir

    results = tmp_path / "results"
    write_results(results)
    for budget, k in ((0.02, 7), (0.08, 3)):
        params = json.dumps({"budget": budget, "norm": "l2", "seed": 0, "steps": 20})
        cells = [("none", "pgd", "1" * k + "0" * (10 - k)), ("sor", "pgd", "1" * (k + 1) + "0" * (9 - k))]
        folder = sweep_out_dir(results, "attacks.pgd.budget", str(budget))
        path = write_results(folder, cells)
        path.write_text(path.read_text().replace(PGD.replace('"', '""'), params.replace('"', '""')))
    written = make_plots(results, tmp_path / "plots", samples=0)
    names = sorted(p.name for p in written)
    assert names == ["accuracy_synthshapes_transfer_pointnet-lite_smoke_n10_seed0.png",
                     "sweep_attacks.pgd.budget_synthshapes_transfer_pointnet-lite_smoke_n10_seed0.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------ sweep, end to end
@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory) -> Path:
    """One cache for the session's `bench` subprocesses, so the smoke models train once."""
    path = tmp_path_factory.getbasetemp() / "pcrb-shared-cache"
    path.mkdir(exist_ok=True)
    return path


def test_sweep_records_each_value_and_plot_draws_curves_and_examples(tmp_path, bench_cache):
    results = tmp_path / "results"
    env = {**os.environ, "PCRB_CACHE_DIR": str(bench_cache), "PCRB_NO_TUNE": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmark", "run", "--profile", "smoke", "--victim", "pointnet-lite",
                           "--defense", "none,sor", "--attack", "pgd", "--limit", "8", "--sweep",
                           "attacks.pgd.budget=0.02,0.08", "--out", str(results), "--no-progress"],
                          check=False, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from benchmark.plots import read_sweeps

    frame = read_sweeps(results)["attacks.pgd.budget"]
    pgd = frame[frame["attack"] == "pgd"]
    assert sorted(set(pgd["sweep_value"])) == [0.02, 0.08]
    assert sorted({json.loads(p)["budget"] for p in pgd["attack_params"]}) == [0.02, 0.08]
    assert not (results / "synthshapes.csv").exists()  # a sweep never overwrites the main results
    pytest.importorskip("matplotlib")
    proc = subprocess.run([sys.executable, "-m", "benchmark", "plot", "--results",
                           str(results / "sweeps" / "attacks.pgd.budget" / "0.08"), "--out", str(tmp_path / "plots"),
                           "--samples", "2"], check=False, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "plots" / "examples_synthshapes_pointnet-lite_smoke_pgd.png").exists(), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "benchmark", "plot", "--results", str(results), "--out",
                           str(tmp_path / "plots"), "--samples", "0"], check=False, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "plots").glob("sweep_attacks.pgd.budget_*.png"))
