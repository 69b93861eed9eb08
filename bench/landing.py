"""Benchmark 4: landing. 20 workers already verified (`integrating`); ticks until all landed.

Getting there honestly, once: 20 independent tasks are worked by the scripted agent
(contrib/agents/scripted-agent: each adds its own file) and pass the CI gate (`true`), while a
pre-receive hook on origin declines every push, so each verified worker ends `blocked_push` with its
work intact. The hook is removed and `ralph retry` sends each back to `integrating`. That sandbox is
copied aside; every run restores it to the same path (state.json holds absolute paths), so each run
starts from exactly the same 20 verified workers and measures landing only.

Landing is a merge train: the 20 join it (each change replayed onto the position ahead), every
position is gated, and the passed prefix lands as one commit per task (its tree the gated one plus its
queue/done change) in one push. ralph: `python -m ralph ... run` again and again (the next tick as
soon as every job the last one started has finished, instead of cron's minute) until all 20 are
`completed`, timed from the first tick's start to the last tick's end. Two variants:
  - CI disabled (`ci.command = []` in the control checkout's config): one tick joins and lands all.
  - CI enabled with a trivial command (`true`): the first tick joins and starts the 20 gates (one per
    position, as many at once as `ci.max_parallel`, here `--workers` = 20), the next lands.
Floors, given the same bookkeeping (each task's queue.json and done.json as ralph's landing wrote
them, taken from a first, untimed ralph run) and a fetch inside their timer, on a clone holding the
20 verified commits:
  - the train's floor: `git fetch`, then per change `git cherry-pick -n` + the two files + `git commit`,
    then one `git push`: what ralph's CI-disabled tick does, by hand;
  - the per-change floor: per change `git fetch` + `git checkout origin/main` + the same commit +
    `git push`: landing one at a time, as ralph did before the train.
The issue's target: at most 2x the floor. Also counted: the git commands of one landing tick.

    python bench/landing.py [--runs N]
"""

from __future__ import annotations

import json
import re
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
    git_kinds,
    git_log,
    heading,
    logging_git,
    make_project,
    print_table,
    runs_from_argv,
    sandbox,
    task,
    task_id,
)

RUNS = 5
CHANGES = 20  # the size
FLAWED = 7  # the task whose work holds a FIXME
# The base is closed; ralph's own refs (the attempts it records under refs/ralph/) stay open.
DECLINE = """#!/bin/sh
while read old new ref; do
  case "$ref" in
    refs/heads/*) echo 'bench: pushes are closed while the workers get verified' >&2; exit 1;;
  esac
done
exit 0
"""


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


def tick_until(
    project: Project, done: Callable[[], bool], *, timeout: float, stderr: list[str] | None = None
) -> Ticking:
    """Tick as fast as the jobs allow until `done()`: the next tick once every job has finished. Each
    tick's stderr (its log lines) goes to `stderr` when given."""
    deadline = time.monotonic() + timeout
    spent = Ticking()
    while True:
        start = time.perf_counter()
        done_tick = project.tick()
        spent.in_ticks += time.perf_counter() - start
        spent.ticks += 1
        if stderr is not None:
            stderr.append(done_tick.stderr)
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
    # One task's work holds a FIXME: a gate that looks for it fails that task's first run, and a CI
    # remediation (the scripted agent replaces FIXME) fixes it (merge_train.py). `true` passes it.
    tasks = [
        task(
            n,
            title=f"Change {n}",
            description=f"scripted-agent: write tasks/{task_id(n)}.md FIXME" if n == FLAWED else None,
        )
        for n in range(1, changes + 1)
    ]
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


def set_ci(project: Project, command: list[str], *, max_parallel: int | None = None) -> None:
    """Change ci.command (and ci.max_parallel) in the control checkout's config (the file a tick
    reads), not on origin."""
    config = project.control / ".ralph" / "config.toml"
    lines = [
        line for line in config.read_text().splitlines(keepends=True) if not line.startswith("max_parallel")
    ]
    at = lines.index("[ci]\n") + 1
    assert lines[at].startswith("command = "), lines[at]
    lines[at] = "command = [" + ", ".join(json.dumps(c) for c in command) + "]\n"
    if max_parallel is not None:
        lines.insert(at + 1, f"max_parallel = {max_parallel}\n")
    config.write_text("".join(lines))


@dataclass
class Landed:
    seconds: float
    ticks: int
    gate_runs: int
    gates_stopped: int
    races: int
    blocked: int
    in_ticks: float
    waiting: float
    landings: int  # ticks that pushed (one push each)


def land_all(project: Project, *, timeout: float = 240, count: int | None = None) -> Landed:
    """Tick until every worker is completed (or `count` of them); what it took, from events.jsonl and
    the ticks' own log lines."""
    events_before = len(project.events())
    count = count or len(project.workers())
    stderr: list[str] = []
    start = time.perf_counter()
    spent = tick_until(project, all_in(project, "completed", count), timeout=timeout, stderr=stderr)
    seconds = time.perf_counter() - start
    return tally(project, events_before, stderr, spent, seconds)


def tally(project: Project, events_before: int, stderr: list[str], spent: Ticking, seconds: float) -> Landed:
    events = project.events()[events_before:]
    return Landed(
        seconds=seconds,
        ticks=spent.ticks,
        in_ticks=spent.in_ticks,
        waiting=spent.waiting,
        gate_runs=sum(1 for e in events if e["event"] == "checking"),
        gates_stopped=sum(1 for e in events if str(e.get("detail", "")).startswith("gate stopped")),
        races=sum(len(RACE.findall(text)) for text in stderr),
        blocked=sum(1 for e in events if e["event"] == "blocked_push"),
        landings=sum(1 for text in stderr if " landed " in text),
    )


RACE = re.compile(r"push \d+ did not land")


def check_landed(project: Project, ids: list[str]) -> None:
    """Each task is one commit on origin: its change and its archive (squashed), nothing else of ralph's."""
    log = git(project.origin, "log", "--format=%s<<body>>%b<<end>>", BASE)
    commits = [c.strip().partition("<<body>>")[::2] for c in log.split("<<end>>") if c.strip()]
    for tid in ids:
        subject = f"{tid}: Change {int(tid.split('-')[1])}"
        mine = [body for s, body in commits if s == subject]
        assert len(mine) == 1, f"{tid}: {len(mine)} commits named {subject!r} on origin"
        assert f"ralph: archive {tid}" in mine[0], f"{tid}'s commit does not archive it"


# --- the floors -----------------------------------------------------------------------------------


def bookkeeping(project: Project, ids: list[str], into: Path) -> None:
    """Each task's queue.json and done.json as ralph's landing commit wrote them (after a ralph run)."""
    into.mkdir(exist_ok=True)
    for tid in ids:
        subject = f"{tid}: Change {int(tid.split('-')[1])}"
        sha = git(project.origin, "log", "--format=%H", "--fixed-strings", f"--grep={subject}", BASE)
        assert sha and "\n" not in sha, f"{tid}: no single landing commit ({sha!r})"
        for name in ("queue.json", "done.json"):
            (into / f"{tid}.{name}").write_text(git(project.origin, "show", f"{sha}:.ralph/{name}") + "\n")


def floor_setup(verified: Verified, name: str, *, one_push: bool) -> tuple[Path, Path]:
    """A clone holding the 20 verified commits as branches, and the script that lands them."""
    project = verified.project
    clone = verified.root / name
    shutil.rmtree(clone, ignore_errors=True)
    git(verified.root, "clone", "-q", str(project.origin), str(clone))
    files = verified.root / "bookkeeping"
    lines = ["#!/bin/sh", "set -e"]
    if one_push:
        lines += [f"git fetch -q origin {BASE}", f"git checkout -q --detach origin/{BASE}"]
    for w in sorted(project.workers(), key=lambda w: w["task_id"]):
        tid = w["task_id"]
        branch = f"change/{tid}"
        git(
            clone, "fetch", "-q", "--no-tags", w["workspace_path"], f"{w['verified_sha']}:refs/heads/{branch}"
        )
        if not one_push:
            lines += [f"git fetch -q origin {BASE}", f"git checkout -q --detach origin/{BASE}"]
        lines += [
            f"git cherry-pick -n {branch}",
            f"cp {files}/{tid}.queue.json .ralph/queue.json",
            f"cp {files}/{tid}.done.json .ralph/done.json",
            f"git commit -q -a -m '{tid}: Change {int(tid.split('-')[1])}' -m 'ralph: archive {tid}'",
        ]
        if not one_push:
            lines.append(f"git push -q origin HEAD:{BASE}")
    if one_push:
        lines.append(f"git push -q origin HEAD:{BASE}")
    script = verified.root / f"{name}.sh"
    script.write_text("\n".join(lines) + "\n")
    return clone, script


def floor_once(verified: Verified, *, one_push: bool) -> float:
    verified.restore()
    clone, script = floor_setup(verified, "floor", one_push=one_push)
    start = time.perf_counter()
    subprocess.run(["sh", str(script)], cwd=clone, check=True, capture_output=True)
    return time.perf_counter() - start


def git_per_landing(verified: Verified) -> tuple[list[str], list[str]]:
    """The git commands of the tick that lands the 20 (CI disabled): ralph's own, and its jobs' (none)."""
    project = verified.restore()
    set_ci(project, [])
    with logging_git(verified.root / "shim") as log:
        land_all(project)
    return git_log(log, "ralph"), git_log(log, "job")


def run(runs: int = RUNS, verified: Verified | None = None, changes: int = CHANGES) -> list[Row]:
    if verified is not None:
        changes = len(verified.ids)
    heading(f"4. landing: {changes} verified workers, a merge train, ticks until all landed")
    with sandbox("landing") as root:
        if verified is None:
            began = time.perf_counter()
            verified = prepare(root, changes)
            took = time.perf_counter() - began
            print(f"  set-up ({changes} workers verified, blocked, retried): {took:.1f} s")
        # An untimed first run: the bookkeeping files the floors are given, and the git commands.
        tick_calls, job_calls = git_per_landing(verified)
        check_landed(verified.project, verified.ids)
        bookkeeping(verified.project, verified.ids, verified.root / "bookkeeping")
        results: dict[str, list[Landed]] = {"none": [], "true": []}
        floor, floor_each = Figure([]), Figure([])
        for _ in range(runs):  # interleaved, so that a busy moment weighs on every variant alike
            for variant, command in (("none", []), ("true", ["true"])):
                project = verified.restore()
                set_ci(project, command)
                landed = land_all(project)
                assert landed.blocked == 0, "a worker ended blocked_push"
                check_landed(project, verified.ids)
                results[variant].append(landed)
            floor.runs.append(floor_once(verified, one_push=True))
            floor_each.runs.append(floor_once(verified, one_push=False))
    rows = []
    for variant, label in (("none", "CI disabled"), ("true", "CI `true`")):
        got = results[variant]
        figure = Figure([r.seconds for r in got])
        ticks = sorted(r.ticks for r in got)
        gates = sorted(r.gate_runs for r in got)
        pushes = sorted(r.landings for r in got)
        in_ticks = Figure([r.in_ticks for r in got]).median
        waiting = Figure([r.waiting for r in got]).median
        rows.append(
            Row(
                f"land {changes}, {label}",
                figure,
                floor,
                f"fetch + {changes} x (cherry-pick + bookkeeping commit) + 1 push",
                notes=f"ticks {ticks}, gate runs {gates}, ticks that pushed {pushes}; "
                f"in ticks {in_ticks:.2f} s + waiting for jobs {waiting:.2f} s; "
                f"per landing {figure.median / changes * 1000:.0f} ms "
                f"vs floor {floor.median / changes * 1000:.0f} ms",
                extra={"ticks": ticks, "gate_runs": gates, "in_ticks": in_ticks, "waiting": waiting},
            )
        )
    rows.append(
        Row(
            f"land {changes}, CI disabled",
            rows[0].ralph,
            floor_each,
            f"{changes} x (fetch + checkout + cherry-pick + bookkeeping commit + push)",
        )
    )
    rows[0].extra.update(git_calls=tick_calls, job_git_calls=job_calls)
    print_table(rows)
    print(
        f"  git commands of the tick that lands {changes} (CI disabled): {len(tick_calls)}, "
        f"{len(tick_calls) / changes:.1f} per landing ({git_kinds(tick_calls)})"
    )
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
