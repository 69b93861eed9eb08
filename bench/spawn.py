"""Benchmark 3: spawn. One tick starts 8 workers on a repository of ~5,000 files and ~2,000 commits.

The repository is generated from a fixed seed with `git fast-import`: a first commit of 3,000 files,
then 1,999 commits that each add one file and change two. Eight independent tasks are queued; the
agent is `true` (ralph's part ends when the job is started, so the agent's own cost is not ralph's).

ralph: `python -m ralph -C <control> run --workers 8 --allow-root`. Spawning only starts the jobs (a
prompt written, a job wrapper started and recorded in state.json, each); every job then makes its own
checkout (a local clone, checked out at the base) before its command runs. Two figures:
  - the tick's part: the `ralph run` process, from its start to its exit;
  - until the 8 checkouts exist: from the tick's start to the last job's "checked out" line in its
    log (the wrapper's own time stamp, so nothing polls meanwhile).
Between runs the jobs are waited for and `.ralph/cache` and `.ralph/workspaces` are removed (not
timed). Floors, in the same control repository: 8 x `git clone --local` (which checks out, as a job's
clone does), one after the other, and 8 x `git worktree add --detach`. The issue's target: at most
1.5x the 8 clones. Also counted: the git commands of one spawn, the tick's and the jobs'.

    python bench/spawn.py [--runs N]
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from common import (
    BASE,
    SEED,
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
    timed,
)

RUNS = 5
WORKERS = 8
CHECKED_OUT = re.compile(r"^\[ralph\.job (\S+)\] checked out ")
FIRST_FILES = 3_000
COMMITS = 2_000
WORDS = [
    *("def", "class", "return", "import", "self", "value", "index", "queue", "worker", "parse"),
    *("render", "cache", "fetch", "push", "rebase", "commit", "tree", "blob", "branch", "lease"),
    *("retry", "tick", "lock", "state", "job", "agent", "gate", "verify", "land"),
]


def _text(rng: random.Random, lines: int) -> bytes:
    return "".join(" ".join(rng.choices(WORDS, k=8)) + "\n" for _ in range(lines)).encode()


def fast_import_stream(rng: random.Random) -> bytes:
    """~5,000 files over ~2,000 commits, as a `git fast-import` stream."""
    out: list[bytes] = []
    paths: list[str] = []
    when = 1_700_000_000

    def blob_line(path: str, lines: int) -> None:
        data = _text(rng, lines)
        out.append(f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")

    for n in range(1, COMMITS + 1):
        message = f"commit {n}\n".encode()
        out.append(
            f"commit refs/heads/{BASE}\nmark :{n}\n"
            f"committer Bench <bench@example.com> {when + n * 60} +0000\n"
            f"data {len(message)}\n".encode()
            + message
        )
        if n > 1:
            out.append(f"from :{n - 1}\n".encode())
        if n == 1:
            for i in range(FIRST_FILES):
                path = f"src/pkg{i % 50:02d}/mod{i:05d}.py"
                paths.append(path)
                blob_line(path, rng.randint(5, 40))
        else:
            path = f"src/pkg{rng.randrange(50):02d}/new{n:05d}.py"
            paths.append(path)
            blob_line(path, rng.randint(5, 40))
            for changed in rng.sample(paths[:-1], 2):
                blob_line(changed, rng.randint(5, 40))
        out.append(b"\n")
    return b"".join(out)


def build(root: Path) -> Project:
    origin = root / "origin.git"
    git(root, "init", "-q", "--bare", "-b", BASE, str(origin))
    stream = fast_import_stream(random.Random(SEED))
    git(origin, "fast-import", "--quiet", input=stream)
    tasks = [task(n, title=f"Feature {n}") for n in range(1, WORKERS + 1)]
    return make_project(
        root, tasks=tasks, origin=origin, config=config_toml(agent_command=["true"], workers=WORKERS)
    )


def reset(project: Project) -> None:
    """Back to nothing in flight: wait for the agents, forget them, remove their workspaces, and the
    claims and attempts recorded under refs/ralph/ (on origin, and held in the control checkout), so
    that every run starts the 8 tasks afresh, as the first did."""
    project.wait_for_jobs()
    shutil.rmtree(project.control / ".ralph" / "workspaces", ignore_errors=True)
    shutil.rmtree(project.control / ".ralph" / "cache", ignore_errors=True)
    for repo in (project.origin, project.control):
        refs = git(repo, "for-each-ref", "--format=delete %(refname)", "refs/ralph/")
        if refs:
            git(repo, "update-ref", "--stdin", input=(refs + "\n").encode())


def checked_out_at(project: Project) -> list[float]:
    """When each job's checkout was done (unix time), from the "checked out" line its wrapper logs."""
    out = []
    for log in sorted((project.cache / "runs").glob("*/agent.log")):
        for line in log.read_text().splitlines():
            match = CHECKED_OUT.match(line)
            if match:
                out.append(datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp())
    return out


def spawn_once(project: Project) -> tuple[float, float]:
    """(the tick's part, until the 8 checkouts exist), in seconds."""
    began = time.time()
    elapsed = timed(lambda: project.tick("--workers", str(WORKERS)))
    started = project.lifecycles()
    assert started == {"running": WORKERS}, started
    project.wait_for_jobs()
    done = checked_out_at(project)
    assert len(done) == WORKERS, f"{len(done)} checkouts logged"
    reset(project)
    return elapsed, max(done) - began


def worktrees_once(control: Path, scratch: Path) -> float:
    paths = [scratch / f"wt{n}" for n in range(WORKERS)]

    def make() -> None:
        for path in paths:
            subprocess.run(
                ["git", "worktree", "add", "-q", "--detach", str(path), f"origin/{BASE}"],
                cwd=control,
                check=True,
            )

    elapsed = timed(make)
    for path in paths:
        shutil.rmtree(path)
    git(control, "worktree", "prune")
    return elapsed


def clones_once(control: Path, scratch: Path) -> float:
    paths = [scratch / f"clone{n}" for n in range(WORKERS)]

    def make() -> None:
        for path in paths:
            subprocess.run(["git", "clone", "-q", "--local", str(control), str(path)], check=True)

    elapsed = timed(make)
    for path in paths:
        shutil.rmtree(path)
    return elapsed


def run(runs: int = RUNS) -> list[Row]:
    heading(f"3. spawn: {WORKERS} workers in one tick on ~5,000 files and ~2,000 commits")
    with sandbox("spawn") as root:
        project = build(root)
        files = len(git(project.control, "ls-files").splitlines())
        commits = int(git(project.control, "rev-list", "--count", "HEAD"))
        print(f"  repository: {files} files, {commits} commits")
        project.tick("--dry-run")
        scratch = root / "scratch"
        scratch.mkdir()
        # Interleaved, so that a machine busy with something else weighs on all three alike; each run
        # starts after a sync, so the previous run's writes are not paid for by the next one.
        ralph, ready, worktrees, clones = Figure([]), Figure([]), Figure([]), Figure([])
        for _ in range(runs):
            os.sync()
            tick_s, ready_s = spawn_once(project)
            ralph.runs.append(tick_s)
            ready.runs.append(ready_s)
            os.sync()
            worktrees.runs.append(worktrees_once(project.control, scratch))
            os.sync()
            clones.runs.append(clones_once(project.control, scratch))
        with logging_git(root / "shim") as log:
            spawn_once(project)
        tick_calls, job_calls = git_log(log, "ralph"), git_log(log, "job")
    rows = [
        Row(f"spawn {WORKERS}: the tick's part", ralph, clones, f"{WORKERS} x git clone --local"),
        Row(f"spawn {WORKERS}: until the checkouts exist", ready, clones, "(same floor)"),
        Row(f"spawn {WORKERS}: the tick's part", ralph, worktrees, f"{WORKERS} x git worktree add"),
    ]
    rows[0].extra.update(files=files, commits=commits, tick_git_calls=tick_calls, job_git_calls=job_calls)
    print_table(rows)
    print(f"  git commands in one spawn of {WORKERS}:")
    print(f"    the tick: {len(tick_calls)} ({git_kinds(tick_calls)})")
    print(f"    the jobs: {len(job_calls)}, {len(job_calls) / WORKERS:.1f} per job ({git_kinds(job_calls)})")
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
