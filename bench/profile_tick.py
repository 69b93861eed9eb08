"""Where a tick's time goes: one tick of a benchmark's scenario, in this process, under cProfile,
with every git command counted by a logging `git` first on PATH. Not a benchmark: the profiler and
the logging shim slow everything down; read the proportions, not the totals.

    python bench/profile_tick.py SCENARIO [--top N] [--callers PATTERN]
    python bench/profile_tick.py git-call     # one git call through ralph.git.Git vs subprocess.run

idle        the idle path (benchmark 1): `python -m cProfile -m ralph ... run` in a process of its
            own, since the path is the process's start
lost        a tick that finds the lock held (benchmark 9), likewise in a process of its own
noop        the full no-op tick (benchmark 1), in this process
scale       the full no-op tick with 10,000 queued tasks and 1,000 terminal records (benchmark 2)
spawn       the tick that starts 8 workers on ~5,000 files and ~2,000 commits (benchmark 3); the git
            commands of the 8 jobs' checkouts are counted too
landing     the tick that joins 20 verified workers to the train and lands them, CI disabled
            (benchmark 4)
landing-ci  the first tick of benchmark 4 with CI `true`: joins the 20 and starts their 20 gates
train       the second tick of benchmark 6 (CI `sleep 1`, ci.max_parallel 4): reaps the first 4
            gates, lands those 4 in one push, stacks the 16 behind on the landed chain, starts 4 gates
landing-10k one task landing (CI disabled) with benchmark 2's 10,000-task queue and 1,000 records:
            the tick that reaps the scripted agent, commits its work and lands it
"""

from __future__ import annotations

import collections
import cProfile
import fcntl
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common
from common import Project, git_kind, git_log, logging_git, sandbox


def profile_tick(project: Project, root: Path, top: int, **options: object) -> None:
    from ralph import clock
    from ralph.checkout import open_checkout
    from ralph.tick import TickOptions, run_tick

    with logging_git(root / "shim") as log:
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        tick_options = TickOptions(allow_root=True, **options)  # type: ignore[arg-type]
        report = run_tick(open_checkout(project.control), tick_options, clock.now())
        profiler.disable()
        elapsed = time.perf_counter() - start
        project.wait_for_jobs()
    print(
        f"tick: {elapsed:.2f} s under the profiler; {len(report.actions)} actions; "
        f"workers {project.lifecycles()}"
    )
    show_git(log)
    stats = pstats.Stats(profiler)
    print(f"\ntop {top} by cumulative time:")
    stats.sort_stats("cumulative").print_stats(top)
    print(f"top {top} by own time:")
    stats.sort_stats("tottime").print_stats(top)
    if "--callers" in sys.argv:  # who calls what matches the pattern, and for how long
        stats.print_callers(sys.argv[sys.argv.index("--callers") + 1])


def show_git(log: Path) -> None:
    for who, label in (("ralph", "the tick"), ("job", "its jobs (their set-up, outside the box)")):
        calls = git_log(log, who)
        if not calls and who == "job":
            continue
        print(f"git commands, {label}: {len(calls)}")
        counts = collections.Counter(git_kind(c) for c in calls)
        for kind, n in counts.most_common():
            print(f"  {n:5d}  git {kind}")


def profile_process(project: Project, root: Path, top: int) -> None:
    """`ralph run` in a process of its own under cProfile: for the paths a process's start decides."""
    out = root / "tick.prof"
    with logging_git(root / "shim") as log:
        start = time.perf_counter()
        done = subprocess.run(
            [
                common.PYTHON,
                "-m",
                "cProfile",
                "-o",
                str(out),
                "-m",
                "ralph",
                "-C",
                str(project.control),
                "run",
                "--allow-root",
            ],
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
    print(f"tick: {elapsed * 1000:.0f} ms under the profiler, exit {done.returncode}")
    show_git(log)
    stats = pstats.Stats(str(out))
    print(f"\ntop {top} by cumulative time:")
    stats.sort_stats("cumulative").print_stats(top)


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
        if scenario in ("idle", "lost"):
            project = common.make_project(root)
            project.tick()  # leaves the idle stamp
            if scenario == "idle":
                profile_process(project, root, top)
            else:
                fd = os.open(project.cache / "state.json.lock", os.O_RDWR)
                fcntl.flock(fd, fcntl.LOCK_EX)
                profile_process(project, root, top)
                os.close(fd)
        elif scenario == "noop":
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
        elif scenario == "train":
            import landing
            import merge_train

            verified = landing.prepare(root)
            project = verified.restore()
            landing.set_ci(project, merge_train.PASSING, max_parallel=merge_train.MAX_PARALLEL)
            project.tick()
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
