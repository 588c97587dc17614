"""Progress of long work: a live rich bar on a terminal, a plain line now and then elsewhere.

A ``bench run`` whose output goes to a log file (a batch job, ``nohup``, CI) would otherwise
print nothing for the many minutes of training and crafting: rich only draws bars on a
terminal. ``progress_report`` gives both the same interface, ``update(advance, info)``, and
on a non-terminal writes ``what: done/total (pct), elapsed, ~eta left, info`` at most every
``interval`` seconds and once at the end.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["LineProgress", "format_seconds", "progress_report"]


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``"1m15s"``; ``3725`` -> ``"1h02m"``; under a minute ``"42s"``."""
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class LineProgress:
    """Progress as log lines: at most one per ``interval`` seconds (plus the last), each with the
    share done, the time elapsed and an estimate of the time left (from the mean pace so far)."""

    def __init__(self, total: int, description: str, write: Callable[[str], None], *, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.description, self.write, self.interval, self.clock = total, description, write, interval, clock
        self.done = 0
        self.info = ""
        self.start = clock()
        self.last = self.start

    def line(self) -> str:
        elapsed = self.clock() - self.start
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = ""
        if 0 < self.done < self.total:
            left = f", ~{format_seconds(elapsed / self.done * (self.total - self.done))} left"
        info = f" · {self.info}" if self.info else ""
        return f"{self.description}: {self.done}/{self.total}{share}, {format_seconds(elapsed)} elapsed{left}{info}"

    def update(self, advance: int = 0, info: str | None = None, description: str | None = None) -> None:
        self.done += advance
        if info is not None:
            self.info = info
        if description is not None:
            self.description = description
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.write(self.line())

    def finish(self) -> None:
        self.write(self.line())


@contextlib.contextmanager
def progress_report(total: int, description: str, console: Any = None, *, enabled: bool = True,
                    interval: float = 30.0, transient: bool = True) -> Iterator[Callable[..., None]]:
    """Yields ``update(advance=0, info=None, description=None)``.

    On a terminal (``console.is_terminal``): a rich bar with elapsed time and ETA (``transient``:
    removed when done). Elsewhere: :class:`LineProgress` lines on ``console``. Disabled: a no-op.
    ``console`` defaults to a rich console on stderr.
    """
    if not enabled:
        yield lambda *args, **kwargs: None
        return
    from rich.console import Console

    console = console if console is not None else Console(stderr=True)
    if not console.is_terminal:
        lines = LineProgress(total, description, lambda text: console.print(text, highlight=False, soft_wrap=True),
                             interval=interval)
        yield lines.update
        lines.finish()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=transient) as bar:
        task = bar.add_task(description, total=total, info="")

        def update(advance: int = 0, info: str | None = None, description: str | None = None) -> None:
            fields: dict[str, Any] = {} if info is None else {"info": info}
            if description is not None:
                fields["description"] = description
            bar.update(task, advance=advance, **fields)

        yield update
