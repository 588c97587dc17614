"""``leaderboard.md``, rendered from the result tables (never edited by hand).

    render_leaderboard(frame, runs) -> str          # pure: same rows -> same bytes
    write_leaderboard("results", "leaderboard.md")  # reads results/*.csv + results/runs/*.json

One section per (dataset, profile, victim, protocol, seed, n) — and surrogate for the
``blackbox`` protocol. Defenses are ranked by the worst-case robust accuracy (the share of
clouds classified correctly clean and under every attack, or every strong attack where the
rows name them: AutoAttack's convention), with the average robust accuracy over the attacks
beside it (the MRPD paper's number), one column per attack and the clean accuracy. A row
computed with other parameters than the profile's is its own labelled variant
(``mrpd [epochs=50]``, ``benchmark.variants``). Every accuracy carries its 95% Wilson
interval. The section header says how the numbers were produced: data, seed, code version, every attack's and defense's parameters as stored in
the rows, and the ``bench run`` command that reproduces them.

Determinism: everything is sorted, nothing depends on the clock, the host or the order of
the files, and no timing enters (the measured inference cost ratio stays in the CSV's
``cost_ratio`` column and ``benchmarks/defense_cost.py``): the same rows (and run records)
give byte-identical markdown, and so does the same ``bench run`` repeated with the same seed.

One concept per module; every name below is importable from ``benchmark.leaderboard``:

- ``sections``: which rows form a section (``Section``, ``sections``, ``read_runs``, ``PROTOCOL_TEXT``);
- ``ranking``: a section's defenses ranked, with their cells (``rank_defenses``, ``attack_roles``);
- ``cells``: the text of one cell (accuracy with its interval, p-values, parameters);
- ``reproduce``: the ``bench run`` command of a section (``reproduce_commands``, ``reproduce_overrides``);
- ``markdown``: the document (``render_leaderboard``, ``write_leaderboard``, ``GENERATED_NOTICE``);
- ``readme``: the README sections it registers with ``bench docs`` (and ``leaderboard_rows``);
- ``html``: the same leaderboard as one static web page (``bench leaderboard --html``; not imported here).
"""
from __future__ import annotations

from benchmark.leaderboard.markdown import GENERATED_NOTICE, render_leaderboard, write_leaderboard
from benchmark.leaderboard.ranking import Standing, attack_roles, rank_defenses
from benchmark.leaderboard.readme import leaderboard_rows  # importing it registers the README sections
from benchmark.leaderboard.reproduce import reproduce_commands, reproduce_overrides
from benchmark.leaderboard.sections import PROTOCOL_TEXT, Section, read_runs, sections

__all__ = [
    "GENERATED_NOTICE",
    "PROTOCOL_TEXT",
    "Section",
    "Standing",
    "attack_roles",
    "leaderboard_rows",
    "rank_defenses",
    "read_runs",
    "render_leaderboard",
    "reproduce_commands",
    "reproduce_overrides",
    "sections",
    "write_leaderboard",
]
