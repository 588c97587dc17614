"""``bench`` / ``python -m benchmark``: tune the CPU allocator once, then run the CLI.

The allocator tunables must be in the environment before the interpreter starts, so the
launcher re-executes itself once with them (guarded by ``PCRB_ALLOCATOR_TUNED``), the way
PyTorch's ``torch.backends.xeon.run_cpu`` launcher does. ``PCRB_NO_TUNE=1`` opts out.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    from benchmark.env import reexec_tuned

    args = sys.argv[1:] if argv is None else list(argv)
    if argv is None:
        reexec_tuned([sys.executable, "-m", "benchmark", *args])
    from benchmark.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
