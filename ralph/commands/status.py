"""`ralph status`: what every worker is doing, read from state.json without taking the lock.

The state file is replaced atomically, so a reader never sees a torn file and needs no lock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from ralph.bookkeeping import current_queues
from ralph.checkout import Checkout, open_checkout
from ralph.clock import format_z
from ralph.clock import now as read_clock
from ralph.commands._output import age, duration, emit_json, one_line, table
from ralph.errors import ExitCode, GitError, PreflightError, QueueError
from ralph.markers import read_blocked_push, read_ci_failure
from ralph.pause import read_pause
from ralph.queue import TaskStatus
from ralph.state import Lifecycle, Worker, load_state


def status(*, start: Path, as_json: bool) -> ExitCode:
    checkout = open_checkout(start)
    now = read_clock()
    doc = build_status(checkout, now)
    if as_json:
        emit_json(doc)
    else:
        click.echo(render_status(doc, now))
    return ExitCode.OK


def build_status(checkout: Checkout, now: datetime) -> dict[str, Any]:
    """The `ralph status --json` document (README: "ralph status --json")."""
    state = load_state(
        checkout.paths.state, now=now, target_branch=checkout.base_branch(), remote=checkout.remote
    )
    titles: dict[str, str] = {}
    queue_counts: dict[str, int] | None = None
    archive_counts: dict[str, int] | None = None
    queue_error = None
    try:
        queues = current_queues(checkout)
    except (QueueError, PreflightError, GitError) as e:
        # Status is what a person runs when something looks odd; a bad queue must not hide the workers.
        queue_error = str(e)
    else:
        titles = {t.id: t.title for t in (*queues.queue.tasks, *queues.done.tasks)}
        queue_counts = _count(t.status for t in queues.queue.tasks)
        archive_counts = _count(t.status for t in queues.done.tasks)
    return {
        "generated_at": format_z(now),
        "repository": str(checkout.root),
        "target_branch": state.target_branch,
        "remote": state.remote,
        "state_file": str(checkout.paths.state),
        "state_exists": (exists := checkout.paths.state.exists()),
        "state_updated_at": format_z(state.updated_at) if exists else None,
        "queue": queue_counts,
        "archive": archive_counts,
        "queue_error": queue_error,
        "paused": None if (paused := read_pause(checkout.paths.pause)) is None else asdict(paused),
        "lifecycle_counts": state.lifecycle_counts(),
        "workers": [_worker_doc(w, titles.get(w.task_id), checkout, now) for w in state.workers],
    }


def _count(statuses: Any) -> dict[str, int]:
    counts = Counter(str(s) for s in statuses)
    return {str(s): counts.get(str(s), 0) for s in TaskStatus}


def _worker_doc(worker: Worker, title: str | None, checkout: Checkout, now: datetime) -> dict[str, Any]:
    job = worker.job if worker.lifecycle in Lifecycle.active() else None
    workspace = Path(worker.workspace_path)
    ci = read_ci_failure(workspace) if workspace.is_dir() else None
    blocked = read_blocked_push(workspace) if workspace.is_dir() else None
    return {
        "task_id": worker.task_id,
        "title": title,
        "lifecycle": str(worker.lifecycle),
        "attempt": worker.attempt,
        "max_attempts": checkout.config.agent.max_attempts,
        "age_seconds": int((now - worker.started_at).total_seconds()),
        "started_at": format_z(worker.started_at),
        "updated_at": format_z(worker.updated_at),
        "completed_at": format_z(worker.completed_at) if worker.completed_at else None,
        "workspace_path": worker.workspace_path,
        "base_sha": worker.base_sha,
        "head_sha": worker.head_sha,
        "verified_sha": worker.verified_sha,
        "landed_sha": worker.landed_sha,
        "remediations": worker.remediations,
        "push_attempts": worker.push_attempts,
        "next_attempt_at": format_z(worker.next_attempt_at) if worker.next_attempt_at else None,
        "last_error": worker.last_error,
        "log_path": worker.job.log_path if worker.job else None,
        "ci_failure": None
        if ci is None
        else {
            "exit_code": ci.exit_code,
            "timed_out": ci.timed_out,
            "generated_at": ci.generated_at,
            "log_path": ci.log_path,
        },
        "blocked_push": None
        if blocked is None
        else {
            "reason": blocked.reason,
            "attempt": blocked.attempt,
            "max_attempts": blocked.max_attempts,
            "generated_at": blocked.generated_at,
        },
        "job": None
        if job is None
        else {
            "kind": str(job.kind),
            "pid": job.pid,
            "started_at": format_z(job.started_at),
            "elapsed_seconds": int((now - job.started_at).total_seconds()),
            "deadline": format_z(job.deadline),
            "log_path": job.log_path,
        },
    }


def render_status(doc: dict[str, Any], now: datetime) -> str:
    lines = [f"base: {doc['remote']}/{doc['target_branch']}    repository: {doc['repository']}"]
    if doc["paused"]:
        p = doc["paused"]
        why = f": {p['reason']}" if p["reason"] else ""
        lines.append(f"PAUSED since {p['since']} by {p['by']}{why} (no new tasks start; `ralph resume`)")
    if doc["queue_error"]:
        lines.append(f"queue: unreadable: {doc['queue_error']}")
    elif doc["queue"] is not None:
        q, a = doc["queue"], doc["archive"] or {}
        parts = [f"{n} {s}" for s, n in q.items() if n]
        lines.append(
            f"queue: {', '.join(parts) or 'empty'}    "
            f"done archive: {a.get('done', 0)} done, {a.get('rejected', 0)} rejected"
        )
    workers = doc["workers"]
    if not workers:
        lines.append("workers: none" + ("" if doc["state_exists"] else " (no tick has run yet)"))
        return "\n".join(lines)
    rows = []
    for w in workers:
        job = w["job"]
        rows.append(
            [
                w["task_id"],
                w["lifecycle"],
                f"{w['attempt']}/{w['max_attempts']}",
                age(datetime.fromisoformat(w["started_at"]), now),
                f"{job['kind']} pid {job['pid']}, {duration(timedelta(seconds=job['elapsed_seconds']))}"
                if job
                else "-",
                one_line(w["last_error"], 60),
            ]
        )
    rendered = table(["TASK", "LIFECYCLE", "ATTEMPT", "AGE", "JOB", "LAST ERROR"], rows).splitlines()
    lines.append(rendered[0])
    for w, row in zip(workers, rendered[1:], strict=True):
        lines.append(row)
        lines.extend(f"    {detail}" for detail in _details(w))
    return "\n".join(lines)


def _details(w: dict[str, Any]) -> list[str]:
    """The lines under a worker's row: where its log is, and what its markers say."""
    out = []
    if w["log_path"] and w["lifecycle"] != "completed":
        out.append(f"log: {w['log_path']}")
    ci = w["ci_failure"]
    if ci:
        how = "timed out" if ci["timed_out"] else f"exit {ci['exit_code']}"
        out.append(
            f"CI failed ({how}) at {ci['generated_at']}; remediations {w['remediations']}; "
            f"log: {ci['log_path']}"
        )
    blocked = w["blocked_push"]
    if blocked:
        out.append(
            f"push blocked ({blocked['attempt']}/{blocked['max_attempts']}): "
            f"{one_line(blocked['reason'], 100)}"
        )
    if w["next_attempt_at"] and w["lifecycle"] in ("integrating", "failed"):
        out.append(f"next attempt at {w['next_attempt_at']}")
    return out
