"""Benchmark 7: a busy base. 12 verified workers, CI `true`, exact verification (`ci.verify_rebased =
true`, the default), while 3 rival clones each push an unrelated commit to main every ~5 s.

The 12 workers are reached as benchmark 4's are (landing.py: verified by the gate while pushes were
declined, then retried; restored from a copy for every run). The rivals are processes of their own
(rival.py): each commits a new file every 4-6 s and pushes it with `git pull --rebase && git push`,
again at once when refused, logging every attempt. ralph ticks as fast as its jobs allow (the next
tick once every job the last one started has finished) for at most 3 minutes, or until all 12 landed.

Every outside push moves the base under the train; with exact verification the train is stacked again
on it and its positions gated again, so landing needs a gate cycle (a tick, the gates, the next tick)
shorter than the gap between two rival pushes. Reported, per run: how many of the 12 landed and when,
ticks, gate runs and gates stopped (events.jsonl), ralph's lost push races (its log lines: "push N did
not land") and the rivals' (their logs), and whether the train was reported starved. Exactness is
checked, not assumed: each landed commit's tree must be, but for ralph's queue and done files, the tree
of a commit a gate judged in this run (from the gate jobs' specs).

    python bench/busy_base.py [--runs N]
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import Figure, Project, Row, heading, print_table, runs_from_argv, sandbox
from landing import RACE, Verified, prepare
from rival import Rivals

RUNS = 3
WORKERS = 12
RIVALS = 3
PERIOD_S = 5.0
LIMIT_S = 180.0
IGNORED = (":(exclude).ralph/queue.json", ":(exclude).ralph/done.json")
STARVED = re.compile(r"stacked again \d+ times by outside pushes")


@dataclass
class Busy:
    landed: int
    seconds: float  # until the last landing (or the limit)
    ticks: int
    gate_runs: int
    gates_stopped: int
    races: int  # ralph's lost push races
    rival_pushes: int
    rival_refused: int
    starved: int  # "starved" reports
    rebuilds: int  # the most `train.rebuilds` state.json showed after a tick (landing.max_rebuilds: 5)
    exact: bool
    unmatched: list[str]


def gated_commits(project: Project, since: float) -> set[str]:
    """Every commit a gate job judged since `since` (unix time), from the specs the jobs were given."""
    out = set()
    for spec in (project.cache / "runs").glob("*/ci-*.spec.json"):
        if spec.stat().st_mtime >= since:
            prepare = json.loads(spec.read_text()).get("prepare") or {}
            if prepare.get("commit"):
                out.add(prepare["commit"])
    return out


def landed_commits(project: Project) -> dict[str, str]:
    return {
        w["task_id"]: w["landed_sha"]
        for w in project.workers()
        if w["lifecycle"] == "completed" and w["landed_sha"]
    }


def same_code(project: Project, a: str, b: str) -> bool:
    """Whether two commits' trees differ nowhere but in ralph's queue and done files."""
    done = subprocess.run(
        ["git", "diff", "--quiet", a, b, "--", ".", *IGNORED], cwd=project.control, capture_output=True
    )
    return done.returncode == 0


def busy_once(verified: Verified, root: Path, seed: int) -> Busy:
    project = verified.restore()
    events_before = len(project.events())
    rivals_root = root / "rivals"
    rivals_root.mkdir()
    began_wall = time.time()
    stderr: list[str] = []
    ticks = 0
    rebuilds = 0
    last_landing = LIMIT_S
    with Rivals(project.origin, rivals_root, RIVALS, PERIOD_S, seed=seed) as rivals:
        start = time.perf_counter()
        deadline = start + LIMIT_S
        while True:
            stderr.append(project.tick(timeout=LIMIT_S).stderr)
            ticks += 1
            rebuilds = max(rebuilds, (project.state().get("train") or {}).get("rebuilds", 0))
            done = sum(1 for w in project.workers() if w["lifecycle"] == "completed")
            if done == WORKERS:
                last_landing = time.perf_counter() - start
                break
            if time.perf_counter() > deadline:
                break
            project.wait_for_jobs(timeout=LIMIT_S)
    rival_pushes, rival_refused = rivals.counts()
    events = project.events()[events_before:]
    landed = landed_commits(project)
    gated = gated_commits(project, began_wall)
    unmatched = [t for t, c in landed.items() if not any(same_code(project, g, c) for g in gated)]
    shutil.rmtree(rivals_root, ignore_errors=True)
    text = "\n".join(stderr)
    return Busy(
        landed=len(landed),
        seconds=last_landing,
        ticks=ticks,
        gate_runs=sum(1 for e in events if e["event"] == "checking"),
        gates_stopped=sum(1 for e in events if str(e.get("detail", "")).startswith("gate stopped")),
        races=len(RACE.findall(text)),
        rival_pushes=rival_pushes,
        rival_refused=rival_refused,
        starved=len(STARVED.findall(text)),
        rebuilds=rebuilds,
        exact=not unmatched,
        unmatched=unmatched,
    )


def run(runs: int = RUNS) -> list[Row]:
    heading(
        f"7. busy base: {WORKERS} verified, CI `true`, exact verification, "
        f"{RIVALS} rivals pushing every ~{PERIOD_S:g} s"
    )
    with sandbox("busy") as root:
        began = time.perf_counter()
        verified = prepare(root, WORKERS)
        print(f"  set-up ({WORKERS} workers verified, blocked, retried): {time.perf_counter() - began:.1f} s")
        results = [busy_once(verified, root, seed=100 * k) for k in range(runs)]
    for n, r in enumerate(results, 1):
        print(
            f"  run {n}: {r.landed}/{WORKERS} landed in {r.seconds:.1f} s; ticks {r.ticks}, "
            f"gate runs {r.gate_runs}, "
            f"gates stopped {r.gates_stopped}; push races lost: ralph {r.races}, rivals {r.rival_refused} "
            f"(rivals landed {r.rival_pushes} pushes); train.rebuilds up to {r.rebuilds}, "
            f"starved reports {r.starved}; "
            f"exact: {'yes' if r.exact else 'NO: ' + ', '.join(r.unmatched)}"
        )
    all_landed = all(r.landed == WORKERS and r.seconds <= LIMIT_S for r in results)
    rows = [
        Row(
            f"busy base: {WORKERS} land, {RIVALS} rivals",
            Figure([r.seconds for r in results]),
            notes=f"all {WORKERS} landed within {LIMIT_S:.0f} s in every run: "
            f"{'yes' if all_landed else 'NO'}; "
            f"landed {[r.landed for r in results]}; ticks {[r.ticks for r in results]}; "
            f"gate runs {[r.gate_runs for r in results]}; ralph's lost races {[r.races for r in results]}; "
            f"rivals' refused pushes {[r.rival_refused for r in results]} of "
            f"{[r.rival_pushes + r.rival_refused for r in results]}; "
            f"every landed tree gated: {all(r.exact for r in results)}",
            extra={"runs": [r.__dict__ for r in results]},
        )
    ]
    print_table(rows)
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    sys.exit(0 if run(runs_from_argv(RUNS, minimum=1)) else 1)
