"""``bench`` / ``python -m benchmark``: tune the CPU allocator once, then run the CLI.

The allocator tunables must be in the environment before the interpreter starts, so the
launcher re-executes itself once with them (guarded by ``PCRB_ALLOCATOR_TUNED``), the way
PyTorch's ``torch.backends.xeon.run_cpu`` launcher does. ``PCRB_NO_TUNE=1`` opts out.
"""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    from benchmark.env import tuned_environment

    args = sys.argv[1:] if argv is None else list(argv)
    env = tuned_environment()
    if env is not None and argv is None:
        try:
            os.execve(sys.executable, [sys.executable, "-m", "benchmark", *args], env)
        except OSError:
            pass  # cannot re-exec (unusual platform): run untuned rather than fail
    from benchmark.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
