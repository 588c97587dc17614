"""``bench`` / ``python -m benchmark``: tune the CPU allocator once, then run the CLI.

The allocator tunables must be in the environment before the interpreter starts, so the
launcher re-executes itself once with them (guarded by ``PCRB_ALLOCATOR_TUNED``), the way
PyTorch's ``torch.backends.xeon.run_cpu`` launcher does. ``PCRB_NO_TUNE=1`` opts out.
It then sets the intra-op thread count (``benchmark.core.env.choose_threads``): the process's
own choice, never a library import's, so tests and notebooks keep theirs.
"""
from __future__ import annotations

import sys


def requested_threads(args: list[str]) -> int | None:
    """The value of ``--threads N`` / ``--threads=N`` anywhere on the command line (None: not given)."""
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--threads=") else (
            args[i + 1] if arg == "--threads" and i + 1 < len(args) else None)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"--threads takes a whole number, got {value!r}") from None
    return None


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    from benchmark.core.env import apply_thread_choice, reexec_tuned

    args = sys.argv[1:] if argv is None else list(argv)
    if argv is None:
        reexec_tuned([sys.executable, "-m", "benchmark", *args])
    try:
        apply_thread_choice(requested_threads(args))
    except ValueError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    from benchmark.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
