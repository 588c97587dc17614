"""Checks of the documents ``bench docs`` maintains that a stale section check cannot see: a
relative link that points nowhere, and a measured-looking number typed by hand outside the
generated sections (it would drift from the run it came from).

Both work on ``README.md`` and ``docs/*.md`` under a project root and return one line per
problem (``[]``: none), for ``tests/test_docs.py`` to assert on.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from benchmark.docs.render import documents, outside_sections

__all__ = ["ALLOWED_NUMBERS", "broken_links", "heading_anchors", "measured_numbers", "stray_numbers"]

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_INLINE_CODE = re.compile(r"`[^`]*`")

#: Units after a number that make it a measurement (or a setting that belongs in a generated
#: table): percentages, durations, memory, speed-ups, and counts of what a run processes (a
#: count may take one qualifying word: 256 test clouds).
_UNITS = r"ms|s|secs?|seconds?|min|mins|minutes?|h|hours?|KiB|MiB|GiB|KB|MB|GB|px|k|M"
_COUNTS = (r"clouds?|points?|epochs?|shapes?|files?|parameters|params|tokens?|views?|cores?|threads?|iterations?|"
           r"steps?|examples?")
_NUMBER = re.compile(
    r"(?<![\w.,/=+-])"                              # not inside a name, a path, a version, a flag value or a range
    r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?"                # 1,777 — a number with thousands separators, whatever follows
    r"|\d+(?:\.\d+)?(?:\s?%|[x×](?![\w])"           # 96.3%, 2.8x
    rf"|\s?(?:{_UNITS})(?![\w-])"                   # 698 s, 11.6 min, 512 MiB
    rf"|\s(?:[A-Za-z-]+\s)?(?:{_COUNTS})(?![\w-])))"  # 64 clouds, 256 test clouds, 12 epochs
)

#: Numbers that are conventions, not measurements: the confidence level of the intervals and the
#: strong-attack bar of the sanity checks (``benchmark/sanity.py``).
ALLOWED_NUMBERS = frozenset({"95%", "90%"})


def _prose_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """``(line number, line, inside a fenced code block)`` of every line outside the generated sections."""
    fenced = False
    for number, line in outside_sections(text):
        if _FENCE.match(line):
            fenced = not fenced
            yield number, line, True
            continue
        yield number, line, fenced


def measured_numbers(line: str) -> list[str]:
    """The measured-looking numbers of one line of prose (link targets ignored), less
    :data:`ALLOWED_NUMBERS`."""
    line = _LINK.sub(lambda m: m.group(0)[: m.group(0).rfind("](") + 1], line)  # keep link text, drop target
    found = [m.group(1).replace(" ", "") if m.group(1).endswith("%") else m.group(1) for m in _NUMBER.finditer(line)]
    return [f for f in found if f.replace(" ", "") not in ALLOWED_NUMBERS]


def stray_numbers(root: str | Path = ".") -> list[str]:
    """``path:line: number`` for every measured-looking number outside a generated section."""
    root = Path(root)
    problems = []
    for path in documents(root):
        for number, line, _ in _prose_lines(path.read_text()):
            problems += [f"{path.relative_to(root)}:{number}: {found!r} in {line.strip()!r}"
                         for found in measured_numbers(line)]
    return problems


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of ``text`` (code blocks skipped; repeats get ``-1``, ``-2``, …)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower().replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(root: str | Path = ".") -> list[str]:
    """``path:line: target`` for every relative link or image whose file, folder or heading anchor
    does not exist (web links are not followed)."""
    root = Path(root)
    problems = []
    for path in documents(root):
        text = path.read_text()
        for number, line, fenced in _prose_lines(text):
            if fenced:
                continue
            for target in _LINK.findall(_INLINE_CODE.sub("", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                    continue
                file, _, anchor = target.partition("#")
                dest = (path.parent / file).resolve() if file else path
                ok = dest.exists() and (not anchor or (dest.suffix == ".md" and anchor in heading_anchors(dest.read_text())))
                if not ok:
                    problems.append(f"{path.relative_to(root)}:{number}: {target}")
    return problems
