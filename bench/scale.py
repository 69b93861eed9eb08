"""Benchmark 2: the no-op tick at scale: 100, 1,000 and 10,000 queued tasks, and a tenth as many
terminal worker records (10, 100, 1,000) in state.json.

The queue is long dependency chains, fan-out from hubs and some fan-in, all hanging off a root
task scheduled in the far future, plus some drafts: every task is looked at, none may start, so
the tick stays a no-op. The done archive holds one done task per terminal record; nine in ten
records are `completed` (their task archived), one in ten `failed` with its attempts used up (its
task still queued). Records are recent, so none is pruned.

ralph: the tick as a process (`python -m ralph ... run`), on the idle path (the stamp the last tick
left says nothing changed), as a full tick (the stamp removed first, not timed) with the queue index
the last tick kept (ralph.queuecache: the queue did not change), as a full tick without it (what the
first tick after a change to the queue pays: parse, validate, index), and `run_tick` in this process
(a full tick without start-up and imports, with the index: the part that grows with the queue).
The issue's target: the 10,000-task tick at most 1.3x the 100-task tick.
Floor: one Python process that fetches, reads both queue files from origin/main and state.json,
and parses the three as JSON: what any tick over these files has to do.

    python bench/scale.py [--runs N]
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from common import (
    BASE,
    PYTHON,
    SEED,
    Figure,
    Project,
    Row,
    config_toml,
    heading,
    make_project,
    print_table,
    runs_from_argv,
    sandbox,
    task,
    task_id,
    timed,
)

RUNS = 5
SIZES = (100, 1_000, 10_000)
WIDTH = 5  # ids RQ-00001 .. RQ-11000
FAR_FUTURE = "2999-01-01T00:00:00Z"
QUEUE_INDEX = Path(".ralph") / "cache" / "parallel" / "queue-index.json"  # ralph.queuecache

FLOOR_SCRIPT = """\
import json, subprocess, sys
control, base = sys.argv[1], sys.argv[2]
def git(*args):
    return subprocess.run(["git", *args], cwd=control, capture_output=True, check=True).stdout
git("fetch", "-q", "origin", base)
git("rev-parse", f"origin/{base}")
json.loads(git("cat-file", "blob", f"origin/{base}:.ralph/queue.json"))
json.loads(git("cat-file", "blob", f"origin/{base}:.ralph/done.json"))
with open(f"{control}/.ralph/cache/parallel/state.json", "rb") as f:
    json.load(f)
"""


def generate(
    n: int, rng: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(queue, done, worker records) for `n` queued tasks and n/10 terminal records."""
    words = [
        *("alpha", "beta", "gamma", "delta", "parse", "render", "cache"),
        *("index", "queue", "worker", "export", "import", "retry"),
    ]
    queue: list[dict[str, Any]] = []
    hubs: list[int] = [1]
    for i in range(1, n + 1):
        description = " ".join(rng.choice(words) for _ in range(30))
        if i == 1:
            queue.append(task(i, width=WIDTH, description=description, scheduled_start=FAR_FUTURE))
            continue
        roll = rng.random()
        if roll < 0.6:
            deps = [i - 1]  # long chains
        elif roll < 0.9:
            deps = [rng.choice(hubs)]  # fan-out from a hub
        else:
            deps = sorted(set(rng.sample(range(1, i), min(3, i - 1))))  # fan-in
        if rng.random() < 0.02:
            hubs.append(i)
        status = "draft" if rng.random() < 0.05 else "todo"
        queue.append(task(i, width=WIDTH, status=status, depends_on=deps, description=description))
    records = n // 10
    now = datetime.now(UTC).replace(microsecond=0)
    stamp = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    failed = iter(rng.sample(range(2, n + 1), records // 10))
    done: list[dict[str, Any]] = []
    workers: list[dict[str, Any]] = []
    for k in range(records):
        sha = f"{rng.getrandbits(160):040x}"
        record: dict[str, Any] = {
            "task_id": task_id(n + 1 + k, WIDTH),
            "lifecycle": "completed",
            "attempt": 1,
            "workspace_path": "",
            "started_at": stamp,
            "updated_at": stamp,
            "completed_at": stamp,
            "base_sha": sha,
            "head_sha": sha,
            "verified_sha": sha,
            "landed_sha": sha,
            "remediations": 0,
            "push_attempts": 0,
            "next_attempt_at": None,
            "job": None,
            "last_error": None,
        }
        if k % 10 == 9:
            # A queued task whose attempts are used up: selection must look at the record and skip it.
            record.update(
                task_id=task_id(next(failed), WIDTH),
                lifecycle="failed",
                attempt=3,
                landed_sha=None,
                last_error="agent failed (exit 1)",
            )
        else:
            done.append(task(n + 1 + k, width=WIDTH, status="done", completed_at=stamp))
        workers.append(record)
    return queue, done, workers


def build(root: Path, n: int, *, runnable: int = 0) -> Project:
    """The project for `n` tasks; `runnable` more tasks that may start at once (for profile_tick.py)."""
    rng = random.Random(SEED + n)
    queue, done, workers = generate(n, rng)
    first = n + n // 10 + 1
    queue += [task(i, width=WIDTH, title=f"Runnable {i}") for i in range(first, first + runnable)]
    project = make_project(root, tasks=queue, done=done, config=config_toml(id_width=WIDTH))
    for w in workers:
        w["workspace_path"] = str(project.control / ".ralph" / "workspaces" / w["task_id"])
    state = {
        "schema_version": 5,
        "target_branch": BASE,
        "remote": "origin",
        "started_at": workers[0]["started_at"] if workers else "2026-01-01T00:00:00Z",
        "updated_at": workers[0]["started_at"] if workers else "2026-01-01T00:00:00Z",
        "workers": workers,
    }
    project.cache.mkdir(parents=True, exist_ok=True)
    project.state_path.write_text(json.dumps(state, indent=2) + "\n")
    return project


def in_process_tick(control: Path) -> float:
    """run_tick in this process: the tick without interpreter start-up and imports."""
    from ralph import clock
    from ralph.checkout import open_checkout
    from ralph.tick import TickOptions, run_tick

    def once() -> None:
        report = run_tick(open_checkout(control), TickOptions(allow_root=True), clock.now())
        assert not report.actions, report.actions

    return timed(once)


def full_tick(project: Project) -> float:
    project.clear_stamp()
    return timed(project.tick)


def changed_queue_tick(project: Project) -> float:
    """A full tick that finds no index for the queue, as after someone changed it."""
    project.clear_stamp()
    (project.control / QUEUE_INDEX).unlink(missing_ok=True)
    return timed(project.tick)


KINDS = ("idle", "full", "changed", "in-process")


def prepare(root: Path, n: int) -> Project:
    project = build(root, n)
    first = project.tick()  # warm: the lock file, the first save, the idle stamp, the queue index
    assert "started" not in first.stderr, first.stderr
    assert project.stamp.exists(), "the no-op tick left no idle stamp"
    workers_before = len(project.workers())
    assert workers_before == n // 10, workers_before
    return project


def one_round(project: Project) -> dict[str, float]:
    """Each kind of tick once, and the floor, back to back."""
    floor_cmd = [PYTHON, "-c", FLOOR_SCRIPT, str(project.control), BASE]
    return {
        "idle": timed(project.tick),
        "changed": changed_queue_tick(project),
        "full": full_tick(project),
        "in-process": in_process_tick(project.control),
        "floor": timed(partial(subprocess.run, floor_cmd, check=True)),
    }


def run(runs: int = RUNS) -> list[Row]:
    heading("2. scale: the no-op tick with 100, 1,000 and 10,000 queued tasks")
    figures: dict[int, dict[str, Figure]] = {n: {k: Figure([]) for k in (*KINDS, "floor")} for n in SIZES}
    queue_bytes: dict[int, int] = {}
    with ExitStack() as stack:
        projects = {n: prepare(stack.enter_context(sandbox(f"scale{n}")), n) for n in SIZES}
        for n, project in projects.items():
            queue_bytes[n] = len((project.control / ".ralph" / "queue.json").read_bytes())
        # Interleaved, rounds over every size: on a shared machine the load moves in minutes, and a
        # ratio between sizes measured minutes apart measures the load.
        for _ in range(runs):
            for n, project in projects.items():
                for kind, seconds in one_round(project).items():
                    figures[n][kind].runs.append(seconds)
        for n, project in projects.items():
            assert len(project.workers()) == n // 10  # nothing started, nothing pruned
    rows: list[Row] = []
    for n in SIZES:
        f = figures[n]
        label = f"{n:,} tasks, {n // 10:,} records"
        floor_label = "python: fetch + read queue/done/state + json.loads"
        rows += [
            Row(
                f"no-op tick, idle path, {label}",
                f["idle"],
                f["floor"],
                floor_label,
                extra={"queue_bytes": queue_bytes[n]},
            ),
            Row(f"  full no-op tick, {label}", f["full"], f["floor"], "(same floor)"),
            Row(f"  full, queue changed (no index), {label}", f["changed"], f["floor"], "(same floor)"),
            Row(f"  run_tick in-process, {label}", f["in-process"], f["floor"], "(same floor)"),
        ]
    print_table(rows)
    medians = {n: {k: figures[n][k].median for k in KINDS} for n in SIZES}
    small, mid, big = SIZES
    print(f"  {big:,} tasks against {small:,} (the issue's target: at most 1.3x):")
    print("    kind       of the medians   median of each round's ratio [min-max]")
    paired: dict[str, float] = {}
    for kind in KINDS:
        rounds = [b / a for a, b in zip(figures[small][kind].runs, figures[big][kind].runs, strict=True)]
        paired[kind] = statistics.median(rounds)
        print(
            f"    {kind:10s} {medians[big][kind] / medians[small][kind]:5.2f}x"
            f"           {paired[kind]:.2f}x [{min(rounds):.2f}-{max(rounds):.2f}]"
        )
    print("  growth (median) per 1,000 more tasks:")
    for a, b in ((small, mid), (mid, big)):
        per_k = {k: (medians[b][k] - medians[a][k]) / ((b - a) / 1000) * 1000 for k in medians[a]}
        print(
            f"    {a:>6,} -> {b:>6,}: idle +{per_k['idle']:.0f} ms, full +{per_k['full']:.0f} ms, "
            f"changed +{per_k['changed']:.0f} ms, in-process +{per_k['in-process']:.0f} ms"
        )
    rows[0].extra["medians"] = medians
    rows[0].extra["ratio_10k_100"] = {k: medians[big][k] / medians[small][k] for k in medians[big]}
    rows[0].extra["ratio_10k_100_paired"] = paired
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
