"""Specification of the ``bench`` command line, run as a user runs it: ``python -m benchmark ...``.

Each test starts a real process (a few seconds with torch), so there are few of them and
each checks one behaviour a user relies on. Exit status: 0 ok, 2 user error, 130 interrupted.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parent / "plugins"


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture
def bench(tmp_path):
    """Run ``python -m benchmark ARGS`` with an offline, private cache in ``tmp_path/cache``."""
    cache = tmp_path / "cache"

    def run(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PCRB_ALLOCATOR_TUNED", "PCRB_NO_TUNE", "GLIBC_TUNABLES", "LD_PRELOAD")}
        env.update(HF_HUB_OFFLINE="1", PCRB_CACHE_DIR=str(cache), COLUMNS="200")
        if pythonpath is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
        # cwd: a scratch folder, so that `bench run` never writes into the checkout's results/
        return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    run.cache = cache  # type: ignore[attr-defined]
    return run


def assert_user_error(proc: subprocess.CompletedProcess[str]) -> None:
    """Exit status 2 with a one-line message, not a traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------- help


def test_help_names_every_command(bench):
    proc = bench("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("list", "info", "run"):
        assert command in proc.stdout


def test_list_help_names_the_registries_and_plugin_option(bench):
    proc = bench("list", "--help")
    assert proc.returncode == 0, proc.stderr
    for word in ("models", "datasets", "attacks", "defenses", "--plugin"):
        assert word in proc.stdout


def test_run_help_names_the_key_options(bench):
    proc = bench("run", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--defense", "--attack", "--set", "--profile", "--config", "--dataset", "--data-root",
                   "--victim", "--protocol", "--device", "--seed", "--cache-dir", "--out"):
        assert option in proc.stdout


# ------------------------------------------------------------------------------------- list


def test_list_datasets_shows_the_four_readers(bench):
    proc = bench("list", "datasets")
    assert proc.returncode == 0, proc.stderr
    for name in ("synthshapes", "modelnet40", "modelnet10", "scanobjectnn"):
        assert name in proc.stdout


def test_list_attacks_runs_even_when_the_table_is_empty(bench):
    proc = bench("list", "attacks")
    assert proc.returncode == 0, proc.stderr
    assert "attacks (" in proc.stdout


def test_list_models_shows_an_entry_registered_by_a_plugin(bench):
    proc = bench("list", "models", "--plugin", "demo_plugin", pythonpath=PLUGINS)
    assert proc.returncode == 0, proc.stderr
    assert "demo-centroid" in proc.stdout
    assert "Demo plug-in model" in proc.stdout


# ------------------------------------------------------------------------------------- info


def test_info_reports_torch_the_tuned_allocator_and_the_cache_dir(bench):
    import torch

    proc = bench("info")
    assert proc.returncode == 0, proc.stderr
    assert torch.__version__.split("+")[0] in proc.stdout
    assert re.search(r"allocator\s+.*glibc malloc, tuned \(set by bench", proc.stdout), proc.stdout
    assert str(bench.cache) in proc.stdout


def test_info_shows_the_thread_count_the_launcher_chose_and_why(bench):
    proc = bench("info", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"cpu threads\s+.*1 \(--threads\)", proc.stdout), proc.stdout
    bad = bench("run", "--threads", "0", "--print-config")
    assert bad.returncode == 2 and "--threads must be >= 1" in bad.stderr


# -------------------------------------------------------------------------------------- run


def test_run_print_config_shows_the_override_and_the_hash(bench):
    proc = bench("run", "--print-config", "--set", "seed=7")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^seed: 7$", proc.stdout, re.M)
    assert re.search(r"^# config hash: [0-9a-f]{16}$", proc.stdout, re.M)


def test_run_with_an_unknown_config_key_names_it(bench):
    proc = bench("run", "--set", "nope=1")
    assert_user_error(proc)
    assert "unknown config key 'nope'" in proc.stderr


def test_run_with_a_misspelt_dataset_suggests_the_right_one(bench):
    proc = bench("run", "--profile", "smoke", "--dataset", "synthshape")
    assert_user_error(proc)
    assert "did you mean 'synthshapes'" in proc.stderr


def test_run_with_a_misspelt_attack_suggests_the_right_one(bench):
    # 'pgd' is suggested whether it is registered or still planned
    proc = bench("run", "--profile", "smoke", "--attack", "pgb")
    assert_user_error(proc)
    assert "did you mean 'pgd'" in proc.stderr


@pytest.mark.skipif(has_cuda(), reason="this machine has a CUDA GPU")
def test_run_on_cuda_without_a_gpu_is_a_user_error_naming_the_fix(bench):
    proc = bench("run", "--profile", "smoke", "--device", "cuda")
    assert_user_error(proc)
    assert "--device cpu" in proc.stderr


# -------------------------------------------------------------------------- console script


def test_the_bench_console_script_points_at_an_importable_function():
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="bench")
    assert callable(script.load())


def test_train_trains_then_loads_from_the_cache(bench):
    args = ("train", "--model", "pointnet-lite", "--profile", "smoke", "--set", "training.default.epochs=1",
            "--set", "datasets.synthshapes.train_size=66", "--set", "datasets.synthshapes.test_size=33")
    first = bench(*args)
    assert first.returncode == 0, first.stderr
    assert "pointnet-lite" in first.stdout and "trained" in first.stdout
    again = bench(*args)
    assert again.returncode == 0, again.stderr
    assert "cache" in again.stdout
    assert len(list((bench.cache / "weights").glob("pointnet-lite-*.safetensors"))) == 1


def test_train_with_an_unknown_model_suggests_the_right_one(bench):
    proc = bench("train", "--model", "pointnet-lit", "--profile", "smoke")
    assert_user_error(proc)
    assert "did you mean 'pointnet-lite'" in proc.stderr


def test_attack_crafts_then_loads_adversarial_examples_from_the_cache(bench):
    args = ("attack", "--attack", "pgd,drop-100", "--model", "pointnet-lite", "--profile", "smoke", "--limit", "8",
            "--set", "training.default.epochs=1", "--set", "datasets.synthshapes.train_size=66",
            "--set", "datasets.synthshapes.test_size=33", "--set", "attacks.pgd.steps=2",
            "--set", "attacks.pgd.seed=3")  # an attack's own seed beside the run's (it wins)
    first = bench(*args)
    assert first.returncode == 0, first.stderr
    assert "pgd" in first.stdout and "drop-100" in first.stdout and "crafted" in first.stdout
    again = bench(*args)
    assert again.returncode == 0, again.stderr
    assert "crafted" not in again.stdout and again.stdout.count("cache") >= 2


def test_the_run_summary_says_why_each_stored_row_was_replaced():
    from rich.console import Console

    from benchmark.render import print_replaced

    def old(attack, status="ok", params='{"steps": 25}', cell_hash="h-old"):
        return {"protocol": "transfer", "defense": "none", "attack": attack, "status": status,
                "attack_params": params, "defense_params": "{}", "cell_hash": cell_hash}

    new_rows = [{"cell_hash": "h1", "attack_params": '{"steps": 100}', "defense_params": "{}"},  # profile changed
                {"cell_hash": "h2", "attack_params": '{"steps": 25}', "defense_params": "{}"},   # code changed
                {"cell_hash": "h-old", "attack_params": '{"steps": 25}', "defense_params": "{}"}]  # --force
    replaced = [(old("fmn"), "h1"), (old("pgd"), "h2"), (old("cw"), "h-old"), (old("knn", status="failed"), "h4")]
    console = Console(record=True, width=400)
    print_replaced(replaced, new_rows, console)
    said = console.export_text()
    assert "replaced 4 stored row(s) of the same cells" in said and "1 had failed" in said
    assert "1 were computed with the profile's earlier settings" in said
    assert "1 with the same settings before code, weights or data changed" in said
    assert "1 with identical parameters" in said
