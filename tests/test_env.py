"""Specification of benchmark.core.env: the allocator tunables the launcher applies, and device resolution."""
from __future__ import annotations

import platform
import sys

import pytest
import torch

from benchmark.__main__ import requested_threads
from benchmark.core.env import (
    GLIBC_MALLOC_TUNABLES,
    DeviceError,
    allocator_status,
    busy_cpus,
    choose_threads,
    package_versions,
    resolve_device,
    tuned_environment,
    usable_cpus,
)

glibc_linux = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
    reason="the malloc tunables only apply to glibc Linux",
)
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")

TUNED = ":".join(f"{k}={v}" for k, v in GLIBC_MALLOC_TUNABLES.items())


def tunables_of(env: dict[str, str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in env["GLIBC_TUNABLES"].split(":"))


# ------------------------------------------------------------------------ tuned_environment


def test_the_tunables_are_the_three_malloc_settings():
    assert GLIBC_MALLOC_TUNABLES == {
        "glibc.malloc.mmap_max": "0",
        "glibc.malloc.trim_threshold": "100000000000",
        "glibc.malloc.top_pad": "1073741824",
    }


@glibc_linux
def test_tuned_environment_sets_the_three_tunables_and_the_guard():
    env = tuned_environment({"PATH": "/bin"})
    assert tunables_of(env) == GLIBC_MALLOC_TUNABLES
    assert env["PCRB_ALLOCATOR_TUNED"] == "1"
    assert env["PATH"] == "/bin"


@glibc_linux
def test_tuned_environment_does_not_modify_its_argument():
    environ = {"PATH": "/bin"}
    tuned_environment(environ)
    assert environ == {"PATH": "/bin"}


def test_no_reexec_when_already_tuned():
    assert tuned_environment({"PCRB_ALLOCATOR_TUNED": "1"}) is None


def test_no_reexec_when_the_user_opts_out():
    assert tuned_environment({"PCRB_NO_TUNE": "1"}) is None


@glibc_linux
def test_pcrb_no_tune_zero_does_not_opt_out():
    assert tuned_environment({"PCRB_NO_TUNE": "0"}) is not None


def test_no_reexec_when_jemalloc_is_preloaded():
    assert tuned_environment({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}) is None


@glibc_linux
def test_a_users_other_tunables_are_kept():
    env = tuned_environment({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
    assert env["GLIBC_TUNABLES"].startswith("glibc.pthread.rseq=0:")
    assert tunables_of(env) == {"glibc.pthread.rseq": "0", **GLIBC_MALLOC_TUNABLES}


@glibc_linux
def test_a_tunable_the_user_set_is_not_overridden():
    env = tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=65536"})
    assert tunables_of(env)["glibc.malloc.mmap_max"] == "65536"
    assert env["GLIBC_TUNABLES"].count("glibc.malloc.mmap_max") == 1


# ------------------------------------------------------------------------- allocator_status


def test_status_after_the_launcher_tuned_it():
    status = allocator_status({"GLIBC_TUNABLES": TUNED, "PCRB_ALLOCATOR_TUNED": "1"})
    assert status.startswith("glibc malloc, tuned (set by bench")


def test_status_when_the_user_set_the_same_tunables():
    assert "tuned (set by the user" in allocator_status({"GLIBC_TUNABLES": TUNED})


def test_status_with_jemalloc_names_it_and_its_config():
    status = allocator_status({"LD_PRELOAD": "libjemalloc.so.2", "MALLOC_CONF": "dirty_decay_ms:-1"})
    assert status == "jemalloc (LD_PRELOAD; MALLOC_CONF=dirty_decay_ms:-1)"


def test_status_when_opted_out():
    assert allocator_status({"PCRB_NO_TUNE": "1"}) == "default allocator (PCRB_NO_TUNE=1)"


@glibc_linux
def test_status_when_untuned_says_how_to_tune():
    status = allocator_status({})
    assert status.startswith("glibc malloc, untuned")
    assert "python -m benchmark" in status


@glibc_linux
def test_status_with_only_some_tunables_is_untuned():
    assert "untuned" in allocator_status({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"})


# ---------------------------------------------------------------------------------- devices


def test_auto_picks_cuda_when_available_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_cpu_is_always_available():
    assert resolve_device("cpu") == torch.device("cpu")


def test_device_names_are_normalised():
    assert resolve_device(" CPU ") == torch.device("cpu")


@no_cuda
def test_cuda_without_a_gpu_names_the_fix():
    with pytest.raises(DeviceError, match="--device cpu"):
        resolve_device("cuda")


@pytest.mark.parametrize("spec", ["tpu", "gpu0", "mps"])
def test_an_unknown_or_unsupported_device_is_a_device_error(spec):
    with pytest.raises(DeviceError, match="use auto, cpu, cuda"):
        resolve_device(spec)


# --------------------------------------------------------------------------------- versions


def test_package_versions_name_python_pcrb_and_torch():
    versions = package_versions()
    assert versions["python"] == platform.python_version()
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert versions["pcrb"] != "not installed"


def test_a_tuned_flag_of_zero_means_not_yet_tuned():
    from benchmark.core.env import tuned_environment

    env = tuned_environment({"PCRB_ALLOCATOR_TUNED": "0", "PATH": "/usr/bin"})
    if env is not None:  # None only off glibc Linux
        assert env["PCRB_ALLOCATOR_TUNED"] == "1"


# ------------------------------------------------------------------------ threads


def test_threads_the_user_asked_for_win_then_omp_num_threads():
    assert choose_threads(3, {"OMP_NUM_THREADS": "1"}, cpus=2, busy=0).threads == 3
    choice = choose_threads(None, {"OMP_NUM_THREADS": "1"}, cpus=8, busy=0)
    assert (choice.threads, choice.reason) == (1, "OMP_NUM_THREADS")
    with pytest.raises(ValueError, match="threads"):
        choose_threads(0, {})


@pytest.mark.parametrize(("cpus", "busy", "expected"), [(2, 0.0, 2), (2, 2.0, 1), (8, 3.0, 5), (4, 0.4, 4),
                                                        (4, 9.0, 1), (1, 0.0, 1)])
def test_without_a_request_the_free_usable_cpus_are_used(cpus, busy, expected):
    choice = choose_threads(None, {}, cpus=cpus, busy=busy)
    assert choice.threads == expected and f"{cpus} usable CPU" in choice.reason
    assert ("--threads" in choice.reason) == (expected != cpus)  # a reduced choice says how to override it


def test_busy_cpus_counts_runnable_tasks_other_than_this_one(tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("1.52 0.80 0.40 3/412 12345\n")  # 3 runnable, this process among them
    assert busy_cpus(samples=3, interval=0.0, loadavg=str(loadavg)) == 2.0
    loadavg.write_text("0.00 0.00 0.00 1/412 12345\n")
    assert busy_cpus(samples=1, interval=0.0, loadavg=str(loadavg)) == 0.0
    assert busy_cpus(samples=1, interval=0.0, loadavg=str(tmp_path / "absent")) >= 0.0  # load-average fallback
    assert 1 <= usable_cpus()


def test_the_launcher_reads_threads_anywhere_on_the_command_line():
    assert requested_threads(["run", "--threads", "2", "--defense", "none"]) == 2
    assert requested_threads(["--threads=1", "info"]) == 1
    assert requested_threads(["run", "--defense", "none"]) is None
    with pytest.raises(ValueError, match="whole number"):
        requested_threads(["run", "--threads", "two"])
