"""Benchmark 1: the no-op tick. Nothing queued, nothing in flight, origin up to date.

Two kinds of no-op tick, each a process of its own as cron starts it
(`python -m ralph -C <control> run --allow-root`):
  - the idle path: the last tick found nothing to do and left its idle stamp (ralph.stamp); this one
    takes the lock with the standard library alone, asks the remote for the base's sha with one
    `git ls-remote`, finds nothing changed and exits. Most ticks of an idle night are these.
  - the full no-op tick: the stamp is removed before each run (not timed), so the tick imports
    everything, loads the state, fetches, reads the queue and finds nothing to do (and writes the
    stamp again). This is what a tick pays whenever anything changed.
Floor: what such a tick cannot avoid doing, in the same repository, as one shell:
`python -c pass; git fetch origin main; git rev-parse origin/main`.

Also: the git commands each kind runs (a logging `git` first on PATH), and where the imports go:
`python -X importtime` over the idle tick itself, and over `import ralph.commands.run` (what a full
tick imports).

    python bench/noop_tick.py [--runs N]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from common import (
    BASE,
    PYTHON,
    Figure,
    Project,
    Row,
    git_kinds,
    git_log,
    heading,
    logging_git,
    make_project,
    print_table,
    runs_from_argv,
    sandbox,
    timed,
)

RUNS = 9


def floor_command(control: Path) -> list[str]:
    script = f"{PYTHON} -c pass && git fetch -q origin {BASE} && git rev-parse origin/{BASE} >/dev/null"
    return ["sh", "-c", script]


def importtime(module: str) -> tuple[float, list[tuple[float, str]]]:
    """`python -X importtime -c "import <module>"`: (total ms, [(ms, owner)]), the best of three runs.

    Every imported module's own time is charged to its owner: the nearest module, itself or one that
    (transitively) imported it, that is not in the standard library, named by its top-level package
    (ralph's modules one by one). So `asyncio` pulled in by `sh` counts for sh.
    """
    best_total = float("inf")
    best: list[tuple[float, str]] = []
    for _ in range(3):
        done = subprocess.run(
            [PYTHON, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True
        )
        total, groups = _charge(done.stderr)
        if total < best_total:
            best_total, best = total, groups
    return best_total, best


def _owner(name: str) -> str | None:
    top = name.split(".")[0]
    if top == "ralph":
        return name
    if top in sys.stdlib_module_names or top.startswith("_") or top in ("encodings", "site", "sitecustomize"):
        return None
    return top


def _charge(report: str) -> tuple[float, list[tuple[float, str]]]:
    # -X importtime prints a module after the modules it imported, indented two spaces a level.
    nodes: list[tuple[int, str, int, list[int]]] = []  # depth, name, own microseconds, children
    pending: dict[int, list[int]] = {}
    for line in report.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        depth = len(m.group(3)) // 2
        nodes.append((depth, m.group(4), int(m.group(1)), pending.pop(depth + 1, [])))
        pending.setdefault(depth, []).append(len(nodes) - 1)
    groups: dict[str, int] = {}
    stack = [(i, "python start-up") for i in pending.get(0, [])]
    while stack:
        index, inherited = stack.pop()
        _, name, own, children = nodes[index]
        owner = _owner(name) or inherited
        groups[owner] = groups.get(owner, 0) + own
        stack.extend((child, owner) for child in children)
    total = sum(groups.values()) / 1000
    return total, sorted(((us / 1000, owner) for owner, us in groups.items()), reverse=True)


def git_calls(project: Project, shim_dir: Path, *, full: bool) -> list[str]:
    """The git commands one no-op tick runs (argv after `git`)."""
    if full:
        project.clear_stamp()
    with logging_git(shim_dir) as log:
        project.tick()
    return git_log(log)


def idle_importtime(project: Project) -> tuple[float, list[tuple[float, str]]]:
    """`python -X importtime -m ralph ... run` on the idle path, charged as `importtime` does."""
    best_total = float("inf")
    best: list[tuple[float, str]] = []
    for _ in range(3):
        done = subprocess.run(
            [PYTHON, "-X", "importtime", "-m", "ralph", "-C", str(project.control), "run", "--allow-root"],
            capture_output=True,
            text=True,
            check=True,
        )
        total, groups = _charge(done.stderr)
        if total < best_total:
            best_total, best = total, groups
    return best_total, best


def full_tick(project: Project) -> float:
    project.clear_stamp()
    return timed(project.tick)


def run(runs: int = RUNS) -> list[Row]:
    heading("1. no-op tick: the idle path and the full tick")
    with sandbox("noop") as root:
        project = make_project(root)
        project.tick()  # the first tick creates state.json and the lock, and leaves the idle stamp
        assert project.workers() == [], project.workers()
        assert project.stamp.exists(), "a no-op tick left no idle stamp"
        command = floor_command(project.control)
        fetch = ["git", "fetch", "-q", "origin", BASE]
        idle, full, floor = Figure([]), Figure([]), Figure([])
        python_only, fetch_only = Figure([]), Figure([])
        for _ in range(runs):  # interleaved, so that a busy moment weighs on each alike
            idle.runs.append(timed(project.tick))
            floor.runs.append(timed(lambda: subprocess.run(command, cwd=project.control, check=True)))
            full.runs.append(full_tick(project))
            python_only.runs.append(timed(lambda: subprocess.run([PYTHON, "-c", "pass"], check=True)))
            fetch_only.runs.append(timed(lambda: subprocess.run(fetch, cwd=project.control, check=True)))
        assert project.stamp.exists()
        idle_calls = git_calls(project, root / "shim-idle", full=False)
        full_calls = git_calls(project, root / "shim-full", full=True)
        idle_total, idle_groups = idle_importtime(project)
    rows = [
        Row("no-op tick, idle path", idle, floor, "python -c pass + git fetch + git rev-parse"),
        Row("no-op tick, full", full, floor, "(same floor)"),
    ]
    print_table(rows)
    print(f"  parts of the floor: python -c pass {python_only.show()}, git fetch {fetch_only.show()}")
    for label, calls in (("idle path", idle_calls), ("full tick", full_calls)):
        print(f"  git commands, {label}: {len(calls)} ({git_kinds(calls)})")
        for call in calls:
            print(f"    git {call[:110]}")
    shown = ", ".join(f"{name} {ms:.0f}" for ms, name in idle_groups[:12] if ms >= 0.5)
    print(f"  python -X importtime, the idle tick itself: {idle_total:.0f} ms; by package (ms): {shown}")
    rows[0].extra["importtime idle tick"] = {"total_ms": idle_total, "by_package_ms": idle_groups}
    for module in ("ralph.cli", "ralph.commands.run"):
        total, groups = importtime(module)
        shown = ", ".join(f"{name} {ms:.0f}" for ms, name in groups[:12] if ms >= 0.5)
        print(f"  python -X importtime -c 'import {module}': {total:.0f} ms; by package (ms): {shown}")
        rows[1].extra[f"importtime {module}"] = {"total_ms": total, "by_package_ms": groups}
    rows[0].extra["git_calls"] = idle_calls
    rows[1].extra["git_calls"] = full_calls
    rows[0].extra["python -c pass"] = python_only.runs
    rows[0].extra["git fetch"] = fetch_only.runs
    return rows


if __name__ == "__main__":
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
