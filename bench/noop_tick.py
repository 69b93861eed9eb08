"""Benchmark 1: the no-op tick. Nothing queued, nothing in flight, origin up to date.

ralph: `python -m ralph -C <control> run --allow-root`, a process of its own, as cron starts it.
Floor: what such a tick cannot avoid doing, in the same repository, as one shell:
`python -c pass; git fetch origin main; git rev-parse origin/main`.

Also: `python -X importtime -c "import ralph.cli"` (what every command imports) and the same for
`ralph.commands.run` (what `ralph run` imports on top), top entries by cumulative time; and the git
commands one no-op tick runs, counted with a logging `git` placed first on PATH.

    python bench/noop_tick.py [--runs N]
"""

from __future__ import annotations

import os
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
    heading,
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


def git_calls(project: Project, shim_dir: Path) -> list[str]:
    """The git commands one no-op tick runs (argv after `git`), from a logging shim first on PATH."""
    real = subprocess.run(
        ["sh", "-c", "command -v git"], capture_output=True, text=True, check=True
    ).stdout.strip()
    log = shim_dir / "git.log"
    shim = shim_dir / "git"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    shim.chmod(0o755)
    env_path = os.environ["PATH"]
    os.environ["PATH"] = f"{shim_dir}:{env_path}"
    try:
        project.tick()
    finally:
        os.environ["PATH"] = env_path
    return log.read_text().splitlines() if log.exists() else []


def run(runs: int = RUNS) -> list[Row]:
    heading("1. no-op tick")
    with sandbox("noop") as root:
        project = make_project(root)
        project.tick()  # the first tick creates state.json and the lock; later ones find them
        assert project.workers() == [], project.workers()
        command = floor_command(project.control)
        fetch = ["git", "fetch", "-q", "origin", BASE]
        ralph, floor, python_only, fetch_only = Figure([]), Figure([]), Figure([]), Figure([])
        for _ in range(runs):  # interleaved, so that a busy moment weighs on each alike
            ralph.runs.append(timed(project.tick))
            floor.runs.append(timed(lambda: subprocess.run(command, cwd=project.control, check=True)))
            python_only.runs.append(timed(lambda: subprocess.run([PYTHON, "-c", "pass"], check=True)))
            fetch_only.runs.append(timed(lambda: subprocess.run(fetch, cwd=project.control, check=True)))
        shim_dir = root / "shim"
        shim_dir.mkdir()
        calls = git_calls(project, shim_dir)
    rows = [
        Row("no-op tick", ralph, floor, "python -c pass + git fetch + git rev-parse"),
    ]
    print_table(rows)
    print(f"  parts of the floor: python -c pass {python_only.show()}, git fetch {fetch_only.show()}")
    print(f"  git commands in one no-op tick: {len(calls)}")
    for call in calls:
        print(f"    git {call[:110]}")
    for module in ("ralph.cli", "ralph.commands.run"):
        total, groups = importtime(module)
        shown = ", ".join(f"{name} {ms:.0f}" for ms, name in groups[:12] if ms >= 0.5)
        print(f"  python -X importtime -c 'import {module}': {total:.0f} ms; by package (ms): {shown}")
        rows[0].extra[f"importtime {module}"] = {"total_ms": total, "by_package_ms": groups}
    rows[0].extra["git_calls"] = calls
    rows[0].extra["python -c pass"] = python_only
    rows[0].extra["git fetch"] = fetch_only
    return rows


if __name__ == "__main__":
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
