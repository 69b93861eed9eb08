"""Benchmark 6: the merge train. 20 verified workers, a CI gate of `sleep 1`, `ci.max_parallel = 4`.

The 20 workers are benchmark 4's (landing.py: verified, held at `integrating`, restored from a copy
for every run). Each tick joins what became ready to the train, reaps the gates that finished, lands
the passed prefix in one push and starts the next gates: at most 4 at once, front first, no further
than 4 positions past the first undecided one. Ticks come as fast as the jobs allow (the next one once
every job the last one started has finished). Two variants:
  - nothing fails: the gate is `sleep 1`. Every task's one gate run is its train position, so gate runs
    must be exactly 20 (the issue: at most 20).
  - one failing task: the gate is `sleep 1` and then fails when a tracked file under tasks/ holds
    "FIXME"; task 7's work does (landing.FLAWED). Its first gate fails; once every position ahead of it
    passed it is blamed, leaves the train for a CI remediation (the scripted agent replaces FIXME),
    and joins again at the end; the positions behind it that were gated meanwhile are stacked again
    without it and gated again. The issue: at most 20 + ci.max_parallel gate runs.
Reported: wall time, ticks, gate runs, gates stopped (a gate whose position was stacked again under
it), and how many ticks pushed (one push each), from events.jsonl and the ticks' own log lines.

    python bench/merge_train.py [--runs N]
"""

from __future__ import annotations

import sys
import time

from common import Figure, Row, heading, print_table, runs_from_argv, sandbox
from landing import CHANGES, FLAWED, Landed, Verified, check_landed, land_all, prepare, set_ci

RUNS = 5
MAX_PARALLEL = 4
PASSING = ["sleep", "1"]
FAILING = ["sh", "-c", "sleep 1; ! grep -rqs FIXME tasks"]


def run(runs: int = RUNS, verified: Verified | None = None, changes: int = CHANGES) -> list[Row]:
    if verified is not None:
        changes = len(verified.ids)
    heading(f"6. merge train: {changes} verified, CI `sleep 1`, ci.max_parallel {MAX_PARALLEL}")
    with sandbox("train") as root:
        if verified is None:
            began = time.perf_counter()
            verified = prepare(root, changes)
            print(
                f"  set-up ({changes} workers verified, blocked, retried): "
                f"{time.perf_counter() - began:.1f} s"
            )
        results: dict[str, list[Landed]] = {"pass": [], "fail": []}
        for _ in range(runs):  # interleaved, so that a busy moment weighs on both alike
            for variant, command in (("pass", PASSING), ("fail", FAILING)):
                project = verified.restore()
                set_ci(project, command, max_parallel=MAX_PARALLEL)
                landed = land_all(project, timeout=300)
                assert landed.blocked == 0, "a worker ended blocked_push"
                check_landed(project, verified.ids)
                results[variant].append(landed)
    rows = []
    limits = {"pass": changes, "fail": changes + MAX_PARALLEL}
    for variant, label in (("pass", "nothing fails"), ("fail", f"task {FLAWED} fails once")):
        got = results[variant]
        gates = sorted(r.gate_runs for r in got)
        worst = max(gates)
        rows.append(
            Row(
                f"train of {changes}, {label}",
                Figure([r.seconds for r in got]),
                notes=f"gate runs {gates} (at most {limits[variant]}: "
                f"{'met' if worst <= limits[variant] else 'MISSED'}); "
                f"ticks {sorted(r.ticks for r in got)}; "
                f"gates stopped {sorted(r.gates_stopped for r in got)}; "
                f"ticks that pushed {sorted(r.landings for r in got)}; "
                f"in ticks {Figure([r.in_ticks for r in got]).median:.1f} s + "
                f"waiting for jobs {Figure([r.waiting for r in got]).median:.1f} s",
                extra={
                    "gate_runs": gates,
                    "limit": limits[variant],
                    "ticks": sorted(r.ticks for r in got),
                    "gates_stopped": sorted(r.gates_stopped for r in got),
                    "pushes": sorted(r.landings for r in got),
                },
            )
        )
    print_table(rows)
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
