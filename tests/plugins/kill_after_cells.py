"""Test plug-in (``--plugin kill_after_cells``): the process dies by SIGKILL, with no cleanup,
right after the run has written ``PCRB_TEST_KILL_AFTER_CELLS`` result rows. The reliability
tests use it to interrupt a real ``bench run`` at a known point."""
from __future__ import annotations

import os
import signal

from benchmark import runner

_write = runner.Runner._write
_LIMIT = int(os.environ.get("PCRB_TEST_KILL_AFTER_CELLS", "0"))


def _write_then_maybe_die(self, cell, row):  # type: ignore[no-untyped-def]
    _write(self, cell, row)
    if _LIMIT and len(self.rows) >= _LIMIT:
        os.kill(os.getpid(), signal.SIGKILL)


runner.Runner._write = _write_then_maybe_die
