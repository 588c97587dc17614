"""Progress of long work (``benchmark.core.progress``): on a non-terminal, lines with the share done and an ETA."""
from __future__ import annotations

import io

from rich.console import Console

from benchmark.core.progress import LineProgress, format_seconds, progress_report


def test_seconds_read_as_a_person_writes_them():
    assert [format_seconds(s) for s in (0, 42.4, 75.2, 3725)] == ["0s", "42s", "1m15s", "1h02m"]


def test_lines_come_at_most_every_interval_with_an_eta_from_the_pace_so_far():
    now = [0.0]
    lines: list[str] = []
    progress = LineProgress(10, "crafting cw", lines.append, interval=30.0, clock=lambda: now[0])
    for step in range(1, 11):
        now[0] = 10.0 * step  # 10 s per step
        progress.update(1, info=f"batch {step}/10")
    progress.finish()
    assert lines[0] == "crafting cw: 3/10 (30%), 30s elapsed, ~1m10s left · batch 3/10"
    assert len(lines) == 4  # after 30, 60 and 90 s, then the final line
    assert lines[-1] == "crafting cw: 10/10 (100%), 1m40s elapsed · batch 10/10"


def test_a_log_file_gets_lines_where_a_terminal_gets_a_bar():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with progress_report(4, "training pointnet", console, interval=0.0) as update:
        for _ in range(4):
            update(1, "epoch 1/1")
    text = out.getvalue()
    assert "training pointnet: 1/4 (25%)" in text and "left" in text and "4/4 (100%)" in text
    with progress_report(4, "quiet", console, enabled=False) as update:
        update(4)
    assert "quiet" not in out.getvalue()
