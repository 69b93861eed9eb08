"""Benchmark 3: spawn. One tick starts 8 workers on a repository of ~5,000 files and ~2,000 commits.

The repository is generated from a fixed seed with `git fast-import`: a first commit of 3,000 files,
then 1,999 commits that each add one file and change two. Eight independent tasks are queued; the
agent is `true` (ralph's part ends when the job is started, so the agent's own cost is not ralph's).

ralph: `python -m ralph -C <control> run --workers 8 --allow-root`, from nothing in flight to eight
agent jobs started (eight workspaces cloned and checked out, prompts written, jobs recorded). Between
runs the jobs are waited for and `.ralph/cache` and `.ralph/workspaces` are removed (not timed).
Floors, in the same control repository: 8 x `git worktree add --detach`, and 8 x
`git clone --local` (which checks out, as ralph's clone does).

    python bench/spawn.py [--runs N]
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from common import (
    BASE,
    SEED,
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
    timed,
)

RUNS = 5
WORKERS = 8
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
    """Back to nothing in flight: wait for the agents, forget them, remove their workspaces."""
    project.wait_for_jobs()
    shutil.rmtree(project.control / ".ralph" / "workspaces", ignore_errors=True)
    shutil.rmtree(project.control / ".ralph" / "cache", ignore_errors=True)


def spawn_once(project: Project) -> float:
    elapsed = timed(lambda: project.tick("--workers", str(WORKERS)))
    started = project.lifecycles()
    assert started == {"running": WORKERS}, started
    reset(project)
    return elapsed


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
        ralph, worktrees, clones = Figure([]), Figure([]), Figure([])
        for _ in range(runs):
            os.sync()
            ralph.runs.append(spawn_once(project))
            os.sync()
            worktrees.runs.append(worktrees_once(project.control, scratch))
            os.sync()
            clones.runs.append(clones_once(project.control, scratch))
    rows = [
        Row(f"spawn {WORKERS} workers", ralph, clones, f"{WORKERS} x git clone --local"),
        Row(f"spawn {WORKERS} workers", ralph, worktrees, f"{WORKERS} x git worktree add"),
    ]
    rows[0].extra.update(files=files, commits=commits)
    print_table(rows)
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
