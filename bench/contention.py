"""Benchmark 5: contention. ralph lands 20 verified workers while another clone pushes an unrelated
commit to main every second.

The 20 verified workers are benchmark 4's (landing.py: verified by the CI gate, held at
`integrating`, restored from a copy for every run), landing with CI disabled: one tick joins them to
the merge train and pushes the 20 as one chain. The rival is a process of its own (rival.py): every
0.8-1.2 s it commits a new file and pushes it with `git pull --rebase && git push`, again at once
when refused, logging every attempt.

ralph: ticks (as in benchmark 4) until all 20 are `completed`: the time, the push races ralph lost
(its log lines "push N did not land"), the rival's refused pushes (its log), and that no worker ended
`blocked_push`.
Floor: benchmark 4's train floor (fetch, 20 x (cherry-pick + bookkeeping commit), one push) with the
same rival, retrying a refused push after `git fetch` + `git rebase` (no backoff).

    python bench/contention.py [--runs N]
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import BASE, Figure, Row, heading, print_table, runs_from_argv, sandbox
from landing import (
    CHANGES,
    Verified,
    bookkeeping,
    check_landed,
    floor_setup,
    git_per_landing,
    land_all,
    prepare,
    set_ci,
)
from rival import Rivals

RUNS = 5
PERIOD_S = 1.0

RETRY = f"""\
until git push -q origin HEAD:{BASE} 2>/dev/null; do
  echo race >> races.txt
  git fetch -q origin {BASE}
  git rebase -q origin/{BASE}
done
"""


def floor_once(verified: Verified, root: Path) -> tuple[float, int]:
    """The git-only train floor, retrying refused pushes, against the same rival."""
    project = verified.restore()
    clone, script = floor_setup(verified, "floor-contended", one_push=True)
    lines = script.read_text().splitlines()
    assert lines[-1].startswith("git push"), lines[-1]
    script.write_text("\n".join(lines[:-1]) + "\n" + RETRY)
    with Rivals(project.origin, root / "rival-floor", 1, PERIOD_S):
        start = time.perf_counter()
        subprocess.run(["sh", str(script)], cwd=clone, check=True, capture_output=True)
        seconds = time.perf_counter() - start
    races_file = clone / "races.txt"
    races = len(races_file.read_text().splitlines()) if races_file.exists() else 0
    subprocess.run(["rm", "-rf", str(root / "rival-floor")], check=True)
    return seconds, races


@dataclass
class Contended:
    seconds: float
    races: int
    blocked: int
    rival_pushes: int
    rival_refused: int
    ticks: int
    error: str | None = None  # a tick that failed: the run ends there


def ralph_once(verified: Verified, root: Path) -> Contended:
    project = verified.restore()
    set_ci(project, [])
    (root / "rival").mkdir()
    with Rivals(project.origin, root / "rival", 1, PERIOD_S) as rivals:
        try:
            landed = land_all(project, timeout=240)
        except RuntimeError as e:
            failed = str(e).strip().splitlines()
            error = failed[0][:120] + (" ... " + failed[-1][:160] if len(failed) > 1 else "")
    if "landed" not in locals():
        pushed, refused = rivals.counts()
        subprocess.run(["rm", "-rf", str(root / "rival")], check=True)
        return Contended(
            float("nan"), 0, 0, pushed, refused, 0, error=f"{error}; workers {project.lifecycles()}"
        )
    check_landed(project, verified.ids)
    pushed, refused = rivals.counts()
    subjects = project.origin_subjects()
    assert sum(1 for s in subjects if s.startswith("rival commit ")) == pushed
    subprocess.run(["rm", "-rf", str(root / "rival")], check=True)
    return Contended(landed.seconds, landed.races, landed.blocked, pushed, refused, landed.ticks)


def run(runs: int = RUNS, verified: Verified | None = None, changes: int = CHANGES) -> list[Row]:
    if verified is not None:
        changes = len(verified.ids)
    heading(f"5. contention: {changes} landings while a rival pushes to main every {PERIOD_S:g} s")
    with sandbox("contention") as root:
        if verified is None:
            began = time.perf_counter()
            verified = prepare(root, changes)
            took = time.perf_counter() - began
            print(f"  set-up ({changes} workers verified, blocked, retried): {took:.1f} s")
        if not (verified.root / "bookkeeping").exists():
            git_per_landing(verified)
            bookkeeping(verified.project, verified.ids, verified.root / "bookkeeping")
        (root / "rival-floor").mkdir(exist_ok=True)
        results: list[Contended] = []
        floors: list[tuple[float, int]] = []
        for _ in range(runs):
            results.append(ralph_once(verified, root))
            (root / "rival-floor").mkdir(exist_ok=True)
            floors.append(floor_once(verified, root))
    blocked = sum(r.blocked for r in results)
    failures = [r.error for r in results if r.error]
    for error in dict.fromkeys(failures):
        print(f"  FAILED ({failures.count(error)} of {len(results)} runs): {error}")
    results = [r for r in results if not r.error] or results
    rows = [
        Row(
            f"land {changes} under contention",
            Figure([r.seconds for r in results]),
            Figure([f[0] for f in floors]),
            "the train floor, its push retried",
            notes=f"ralph's lost races per run {[r.races for r in results]} "
            f"(floor {[f[1] for f in floors]}); "
            f"ticks {[r.ticks for r in results]}; rival pushes {[r.rival_pushes for r in results]}, "
            f"refused {[r.rival_refused for r in results]}; blocked_push: {blocked}"
            + (f"; {len(failures)} runs FAILED (a tick exited non-zero)" if failures else ""),
            extra={
                "races": [r.races for r in results],
                "floor_races": [f[1] for f in floors],
                "blocked": blocked,
            },
        )
    ]
    print_table(rows)
    assert blocked == 0, f"{blocked} workers ended blocked_push"
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
