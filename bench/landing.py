"""Benchmark 4: landing throughput. 20 workers already verified (`integrating`); ticks until all landed.

Getting there honestly, once: 20 independent tasks are worked by the scripted agent
(contrib/agents/scripted-agent: each adds its own file) and pass the CI gate (`true`), while a
pre-receive hook on origin declines every push, so each verified worker ends `blocked_push` with its
work intact. The hook is removed and `ralph retry` sends each back to `integrating`. That sandbox is
copied aside; every run restores it to the same path (state.json holds absolute paths), so each run
starts from exactly the same 20 verified workers and measures landing only.

ralph: `python -m ralph ... run` again and again (the next tick as soon as every job the last one
started has finished, instead of cron's minute) until all 20 are `completed`, timed from the first
tick's start to the last tick's end. Two variants:
  - CI disabled (`ci.command = []` in the control checkout's config): nothing is verified again.
  - CI enabled with a trivial command (`true`): work rebased onto a base that moved since it was
    verified goes through the gate again (`ci.verify_rebased`, the default).
Floor: the same 20 commits (fetched from the workspaces) landed by one shell script doing, per
change, only `git fetch origin main`, `git rebase origin/main <change>`, `git push origin HEAD:main`.

    python bench/landing.py [--runs N]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    BASE,
    Figure,
    Project,
    Row,
    config_toml,
    git,
    heading,
    make_project,
    print_table,
    runs_from_argv,
    sandbox,
    task,
    task_id,
)

RUNS = 5
CHANGES = 20  # the size: `python bench/landing.py`, and `run_all.py --full`
QUICK_CHANGES = 10  # `run_all.py` without --full, to stay within a few minutes
DECLINE = "#!/bin/sh\necho 'bench: pushes are closed while the workers get verified' >&2\nexit 1\n"


@dataclass
class Verified:
    """A sandbox holding 20 verified workers in `integrating`, and a pristine copy to restore."""

    root: Path
    live: Path
    snapshot: Path
    project: Project
    ids: list[str] = field(default_factory=list)

    def restore(self) -> Project:
        shutil.rmtree(self.live)
        subprocess.run(["cp", "-a", str(self.snapshot), str(self.live)], check=True)
        return self.project


@dataclass
class Ticking:
    ticks: int = 0
    in_ticks: float = 0.0  # seconds inside `ralph run` processes
    waiting: float = 0.0  # seconds waiting for the jobs they started (CI gates, agents)


def tick_until(project: Project, done: Callable[[], bool], *, timeout: float) -> Ticking:
    """Tick as fast as the jobs allow until `done()`: the next tick once every job has finished."""
    deadline = time.monotonic() + timeout
    spent = Ticking()
    while True:
        start = time.perf_counter()
        project.tick()
        spent.in_ticks += time.perf_counter() - start
        spent.ticks += 1
        if done():
            return spent
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"not done after {timeout:.0f}s and {spent.ticks} ticks: {project.lifecycles()}"
            )
        start = time.perf_counter()
        project.wait_for_jobs()
        spent.waiting += time.perf_counter() - start


def all_in(project: Project, lifecycle: str, count: int) -> Callable[[], bool]:
    return lambda: project.lifecycles().get(lifecycle, 0) == count


def prepare(root: Path, changes: int = CHANGES) -> Verified:
    """Build `changes` verified workers (see the module's docstring); about ten seconds for 20."""
    live = root / "live"
    live.mkdir()
    tasks = [task(n, title=f"Change {n}") for n in range(1, changes + 1)]
    project = make_project(live, tasks=tasks, config=config_toml(ci_command=["true"], workers=changes))
    ids = [task_id(n) for n in range(1, changes + 1)]
    hook = project.origin / "hooks" / "pre-receive"
    hook.write_text(DECLINE)
    hook.chmod(0o755)
    tick_until(project, all_in(project, "blocked_push", changes), timeout=300)
    hook.unlink()
    with ThreadPoolExecutor(max_workers=4) as pool:  # each takes the tick lock in turn; start-up overlaps
        list(pool.map(lambda tid: project.ralph("retry", tid), ids))
    assert project.lifecycles() == {"integrating": changes}, project.lifecycles()
    snapshot = root / "snapshot"
    subprocess.run(["cp", "-a", str(live), str(snapshot)], check=True)
    return Verified(root=root, live=live, snapshot=snapshot, project=project, ids=ids)


def set_ci(project: Project, command: list[str]) -> None:
    """Change ci.command in the control checkout's config (the file a tick reads), not on origin."""
    config = project.control / ".ralph" / "config.toml"
    lines = config.read_text().splitlines(keepends=True)
    at = lines.index("[ci]\n") + 1
    assert lines[at].startswith("command = "), lines[at]
    lines[at] = "command = [" + ", ".join(f'"{c}"' for c in command) + "]\n"
    config.write_text("".join(lines))


@dataclass
class Landed:
    seconds: float
    ticks: int
    ci_runs: int
    races: int
    blocked: int
    in_ticks: float
    waiting: float


def land_all(project: Project, *, timeout: float = 240) -> Landed:
    """Tick until every worker is completed; what it took."""
    events_before = len(project.events())
    count = len(project.workers())
    start = time.perf_counter()
    spent = tick_until(project, all_in(project, "completed", count), timeout=timeout)
    seconds = time.perf_counter() - start
    events = project.events()[events_before:]
    workers = project.workers()
    return Landed(
        seconds=seconds,
        ticks=spent.ticks,
        in_ticks=spent.in_ticks,
        waiting=spent.waiting,
        ci_runs=sum(1 for e in events if e["event"] == "checking"),
        races=sum(w["push_attempts"] for w in workers),
        blocked=sum(1 for e in events if e["event"] == "blocked_push"),
    )


def check_landed(project: Project, ids: list[str]) -> None:
    subjects = project.origin_subjects()
    for tid in ids:
        assert f"ralph: archive {tid}" in subjects, f"{tid} is not archived on origin"
        assert f"{tid}: Change {int(tid.split('-')[1])}" in subjects, f"{tid}'s change is not on origin"


def floor_setup(verified: Verified, name: str = "floor") -> tuple[Path, Path]:
    """A clone holding the 20 verified commits as branches, and the script that lands them."""
    project = verified.project
    clone = verified.root / name
    shutil.rmtree(clone, ignore_errors=True)
    git(verified.root, "clone", "-q", str(project.origin), str(clone))
    lines = ["#!/bin/sh", "set -e"]
    for w in sorted(project.workers(), key=lambda w: w["task_id"]):
        branch = f"change/{w['task_id']}"
        git(
            clone, "fetch", "-q", "--no-tags", w["workspace_path"], f"{w['verified_sha']}:refs/heads/{branch}"
        )
        lines += [
            f"git fetch -q origin {BASE}",
            f"git rebase -q origin/{BASE} {branch}",
            f"git push -q origin HEAD:{BASE}",
        ]
    script = verified.root / f"{name}.sh"
    script.write_text("\n".join(lines) + "\n")
    return clone, script


def floor_once(verified: Verified) -> float:
    verified.restore()
    clone, script = floor_setup(verified)
    start = time.perf_counter()
    subprocess.run(["sh", str(script)], cwd=clone, check=True, capture_output=True)
    return time.perf_counter() - start


def run(runs: int = RUNS, verified: Verified | None = None, changes: int = CHANGES) -> list[Row]:
    if verified is not None:
        changes = len(verified.ids)
    heading(f"4. landing: {changes} verified workers, ticks until all landed")
    with sandbox("landing") as root:
        if verified is None:
            began = time.perf_counter()
            verified = prepare(root, changes)
            took = time.perf_counter() - began
            print(f"  set-up ({changes} workers verified, blocked, retried): {took:.1f} s")
        results: dict[str, list[Landed]] = {"none": [], "true": []}
        floor = Figure([])
        for _ in range(runs):  # interleaved, so that a busy moment weighs on every variant alike
            for variant, command in (("none", []), ("true", ["true"])):
                project = verified.restore()
                set_ci(project, command)
                landed = land_all(project)
                assert landed.blocked == 0, "a worker ended blocked_push"
                check_landed(project, verified.ids)
                results[variant].append(landed)
            floor.runs.append(floor_once(verified))
    rows = []
    for variant, label in (("none", "CI disabled"), ("true", "CI `true`")):
        got = results[variant]
        figure = Figure([r.seconds for r in got])
        ticks = sorted(r.ticks for r in got)
        ci = sorted(r.ci_runs for r in got)
        in_ticks = Figure([r.in_ticks for r in got]).median
        waiting = Figure([r.waiting for r in got]).median
        rows.append(
            Row(
                f"land {changes}, {label}",
                figure,
                floor,
                f"{changes} x (git fetch + rebase + push)",
                notes=f"ticks {ticks[len(ticks) // 2]} (median), CI runs {ci[len(ci) // 2]}, "
                f"in ticks {in_ticks:.1f} s + waiting for jobs {waiting:.1f} s; "
                f"per landing {figure.median / changes * 1000:.0f} ms "
                f"vs floor {floor.median / changes * 1000:.0f} ms",
                extra={"ticks": ticks, "ci_runs": ci, "in_ticks": in_ticks, "waiting": waiting},
            )
        )
    print_table(rows)
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
