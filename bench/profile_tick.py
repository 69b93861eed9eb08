"""Where a tick's time goes: one tick of a benchmark's scenario, in this process, under cProfile,
with every git command counted by a logging `git` first on PATH. Not a benchmark: the profiler and
the logging shim slow everything down; read the proportions, not the totals.

    python bench/profile_tick.py noop|scale|spawn|landing|landing-ci [--top N]
    python bench/profile_tick.py git-call     # one git call through ralph.git.Git vs subprocess.run

noop        the no-op tick (benchmark 1)
scale       the no-op tick with 10,000 queued tasks and 1,000 terminal records (benchmark 2)
spawn       the tick that starts 8 workers on ~5,000 files and ~2,000 commits (benchmark 3)
landing     the tick that lands 20 verified workers, CI disabled (benchmark 4)
landing-ci  the first tick of benchmark 4 with CI `true`: lands one, rebases the other 19 and
            starts their CI gates again
landing-10k one task landing (CI disabled) with benchmark 2's 10,000-task queue and 1,000 records:
            the tick that reaps the scripted agent, commits its work and lands it
"""

from __future__ import annotations

import collections
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common
from common import Project, sandbox


def shim_git(directory: Path) -> Path:
    real = subprocess.run(
        ["sh", "-c", "command -v git"], capture_output=True, text=True, check=True
    ).stdout.strip()
    log = directory / "git.log"
    shim = directory / "git"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    shim.chmod(0o755)
    os.environ["PATH"] = f"{directory}:{os.environ['PATH']}"
    return log


def profile_tick(project: Project, root: Path, top: int, **options: object) -> None:
    from ralph import clock
    from ralph.checkout import open_checkout
    from ralph.tick import TickOptions, run_tick

    shim_dir = root / "shim"
    shim_dir.mkdir()
    log = shim_git(shim_dir)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    report = run_tick(open_checkout(project.control), TickOptions(allow_root=True, **options), clock.now())  # type: ignore[arg-type]
    profiler.disable()
    elapsed = time.perf_counter() - start
    actions = len(report.actions)
    print(f"tick: {elapsed:.2f} s under the profiler; {actions} actions; workers {project.lifecycles()}")
    calls = log.read_text().splitlines() if log.exists() else []
    kinds = collections.Counter(_kind(c) for c in calls)
    print(f"git commands: {len(calls)}")
    for kind, n in kinds.most_common():
        print(f"  {n:5d}  git {kind}")
    stats = pstats.Stats(profiler)
    print(f"\ntop {top} by cumulative time:")
    stats.sort_stats("cumulative").print_stats(top)
    print(f"top {top} by own time:")
    stats.sort_stats("tottime").print_stats(top)
    project.wait_for_jobs()


def _kind(call: str) -> str:
    """`worktree add`, `update-ref`, ...: the subcommand of a logged git command line, without `-c` pairs."""
    words = call.split()
    while len(words) >= 2 and words[0] == "-c":
        words = words[2:]
    if not words:
        return "(none)"
    if words[0] in ("worktree", "remote", "cat-file", "rev-parse") and len(words) > 1:
        return f"{words[0]} {words[1]}"
    return words[0]


def git_call() -> None:
    """The cost of one git call through ralph's Git (the `sh` package) and through subprocess.run."""
    from ralph.git import Git

    with sandbox("gitcall") as root:
        project = common.make_project(root, tasks=[common.task(n) for n in range(1, 2001)])
        g = Git(project.control)
        blob = f"origin/{common.BASE}:.ralph/queue.json"
        size = len(g.run("cat-file", "blob", blob).data)
        cases = [
            ("git rev-parse HEAD", ("rev-parse", "HEAD")),
            (f"git cat-file blob (queue.json, {size // 1024} KiB)", ("cat-file", "blob", blob)),
        ]
        for label, args in cases:
            for name, call in (
                ("ralph.git.Git.run", lambda a=args: g.run(*a)),
                (
                    "subprocess.run",
                    lambda a=args: subprocess.run(["git", *a], cwd=project.control, capture_output=True),
                ),
            ):
                call()
                times = []
                for _ in range(30):
                    start = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - start)
                print(f"  {label:45s} {name:18s} median {statistics.median(times) * 1000:7.1f} ms")


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    scenario = sys.argv[1]
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 30
    common.hermetic()
    if scenario == "git-call":
        git_call()
        return 0
    with sandbox(f"profile-{scenario}") as root:
        if scenario == "noop":
            project = common.make_project(root)
            project.tick()
            profile_tick(project, root, top)
        elif scenario == "scale":
            import scale

            project = scale.build(root, 10_000)
            project.tick()
            profile_tick(project, root, top)
        elif scenario == "spawn":
            import spawn

            project = spawn.build(root)
            project.tick("--dry-run")
            os.sync()
            profile_tick(project, root, top, workers=spawn.WORKERS)
        elif scenario == "landing-10k":
            import scale

            project = scale.build(root, 10_000, runnable=1)  # scripted agent, CI disabled
            project.tick()  # starts the agent
            project.wait_for_jobs()
            profile_tick(project, root, top)
        elif scenario in ("landing", "landing-ci"):
            import landing

            verified = landing.prepare(root)
            project = verified.restore()
            landing.set_ci(project, ["true"] if scenario == "landing-ci" else [])
            profile_tick(project, root, top)
        else:
            print(__doc__)
            return 2
    common.cleanup_home()
    return 0


if __name__ == "__main__":
    sys.exit(main())
