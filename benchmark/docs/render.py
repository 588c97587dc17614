"""Generated sections of the documents: the markers, the table of renderers, check and write.

A generated section sits between two markers in a markdown file::

    <!-- begin generated: attack-presets -->
    ... (rewritten by `bench docs`) ...
    <!-- end generated: attack-presets -->

:data:`GENERATORS` maps each name to a function that renders it from the project's output
files (``benchmarks/*.json``, ``results/**``). ``bench docs`` rewrites every section of
``README.md`` and ``docs/*.md``; ``bench docs --check`` (and ``tests/test_docs.py``) fails
when a committed section differs from what its files say, so a number cannot drift from its
source.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["GENERATORS", "SECTION", "check_docs", "documents", "markdown_table", "number", "outside_sections",
           "percent", "register_section", "render_sections", "write_docs"]

#: One generated section: group 1 the begin marker, 2 its name, 3 the body, 4 the end marker.
SECTION = re.compile(r"(<!-- begin generated: ([a-z0-9-]+) -->\n)(.*?)(<!-- end generated: \2 -->)", re.DOTALL)

#: name -> renderer(project root) -> markdown (ending in a newline). Filled by
#: :func:`register_section`: the submodules of ``benchmark.docs`` register theirs when the
#: package is imported; the committed results' leaderboard sections (``leaderboard-*``,
#: ``grid-attacks``) are registered by ``benchmark.leaderboard`` (``bench docs`` imports it).
GENERATORS: dict[str, Callable[[Path], str]] = {}


def register_section(name: str) -> Callable[[Callable[[Path], str]], Callable[[Path], str]]:
    """Decorator: ``fn(project root) -> markdown`` renders the generated section ``name``."""

    def add(fn: Callable[[Path], str]) -> Callable[[Path], str]:
        if name in GENERATORS and GENERATORS[name] is not fn:
            raise ValueError(f"generated section {name!r} is already registered")
        GENERATORS[name] = fn
        return fn

    return add


def percent(value: Any) -> str:
    """``0.5`` -> ``50.0%``; None or NaN -> an en dash."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * float(value):.1f}%"


def number(value: Any) -> float:
    """``float(value)``, NaN where it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def markdown_table(rows: list[dict[str, str]]) -> list[str]:
    """A markdown table (one string per line) whose header is the first row's keys."""
    header = list(rows[0])
    return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|",
            *("| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows)]


def render_sections(text: str, root: Path) -> str:
    """``text`` with every generated section rewritten from ``root``'s files (unknown names raise)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in GENERATORS:
            raise KeyError(f"unknown generated section {name!r}; known: {', '.join(GENERATORS)} (the results' "
                           "sections are registered by benchmark.leaderboard: import it first, as `bench docs` does)")
        return match.group(1) + GENERATORS[name](root) + match.group(4)

    return SECTION.sub(replace, text)


def outside_sections(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of every line of ``text`` outside the generated sections (markers
    included in the sections); line numbers start at 1."""
    spans = [(text.count("\n", 0, m.start()), text.count("\n", 0, m.end())) for m in SECTION.finditer(text)]
    for i, line in enumerate(text.splitlines()):
        if not any(first <= i <= last for first, last in spans):
            yield i + 1, line


def documents(root: Path) -> list[Path]:
    """The documents ``bench docs`` maintains: ``README.md`` and ``docs/*.md`` under ``root``."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.exists()]


def check_docs(root: str | Path = ".") -> list[str]:
    """The documents whose generated sections differ from their sources (``[]``: none drifted)."""
    root = Path(root)
    return [str(p.relative_to(root)) for p in documents(root) if render_sections(p.read_text(), root) != p.read_text()]


def write_docs(root: str | Path = ".") -> list[str]:
    """Rewrite the generated sections of README.md and docs/*.md; returns the files changed."""
    root = Path(root)
    changed = []
    for path in documents(root):
        old = path.read_text()
        new = render_sections(old, root)
        if new != old:
            path.write_text(new)
            changed.append(str(path.relative_to(root)))
    return changed
