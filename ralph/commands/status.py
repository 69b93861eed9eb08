"""`ralph status [--all-hosts]`: a summary line, the health of the ticks, and what every worker is doing.

Read from state.json, events.jsonl, the tick ring file and the queue as last fetched, without taking
the lock: each is replaced atomically or appended to, so a reader never sees a torn file. Exits 1
when ticks cannot do their work (the base branch is missing, or the last ticks failed, hung or could
not reach the remote); its first lines say which.

`--all-hosts` also asks the remote (ralph.claims): every claim, with its host and age, stale ones
marked, and the tasks' shared facts (attempts, cancellations, blocks); exits 1 when it cannot ask.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from ralph import health as ticks
from ralph.checkout import Checkout, open_checkout
from ralph.claims import Board, Claim, Claims, Facts, Mark
from ralph.clock import format_z
from ralph.clock import now as read_clock
from ralph.commands._output import duration, emit_json, one_line, table
from ralph.errors import ConfigError, ExitCode, GitError
from ralph.git import find_repository
from ralph.history import Spend, describe_spend
from ralph.markers import read_blocked_push, read_ci_failure
from ralph.pause import read_pause
from ralph.queue import TaskStatus
from ralph.state import Lifecycle, RunnerPause, State, Worker
from ralph.summary import WINDOW, base_problem, look
from ralph.text import printable


def status(*, start: Path, as_json: bool, all_hosts: bool = False) -> ExitCode:
    now = read_clock()
    try:
        checkout = open_checkout(start)
    except ConfigError:
        # The config is broken, so every tick fails too: say how long that has gone on, before the
        # error itself (one line on stderr, as always).
        _say_tick_health(start, now, as_json)
        raise
    doc = build_status(checkout, now)
    if all_hosts:
        doc["hosts"] = hosts_doc(checkout, now)
    if as_json:
        emit_json(doc)
    else:
        text = render_status(doc, now)
        click.echo(text if not all_hosts else text + "\n" + render_hosts(doc["hosts"], now))
    unreachable = all_hosts and doc["hosts"]["error"] is not None
    return ExitCode.ERROR if doc["base_error"] or not doc["health"]["ok"] or unreachable else ExitCode.OK


def _say_tick_health(start: Path, now: datetime, as_json: bool) -> None:
    root = find_repository(start)
    found = ticks.load(root)
    if as_json:
        emit_json({"generated_at": format_z(now), "health": found.as_dict(now)})
    elif not found.ok:
        click.echo(alarms({"base_error": None, "health": found.as_dict(now)}, now)[0])


def build_status(checkout: Checkout, now: datetime) -> dict[str, Any]:
    """The `ralph status --json` document (README: "ralph status --json")."""
    looked, queue_error = look(checkout, now, since=now - WINDOW)
    state, queues = looked.state, looked.queues
    titles: dict[str, str] = {}
    queue_counts: dict[str, int] | None = None
    archive_counts: dict[str, int] | None = None
    if queues is not None:
        titles = {t.id: t.title for t in (*queues.queue.tasks, *queues.done.tasks)}
        queue_counts = _count(t.status for t in queues.queue.tasks)
        archive_counts = _count(t.status for t in queues.done.tasks)
    return {
        "generated_at": format_z(now),
        "summary": looked.summary.as_dict(now),
        "health": looked.summary.health.as_dict(now),
        "base_error": base_problem(checkout, looked.base),
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
        "runner_pauses": [_runner_pause_doc(p, now) for p in state.runner_pauses],
        "lifecycle_counts": state.lifecycle_counts(),
        "workers": [_worker_doc(w, titles.get(w.task_id), checkout, now) for w in state.workers],
        "train": _train_doc(state),
        "base_watch": {
            **state.watch.model_dump(mode="json", exclude={"job"}),
            "gating": state.watch.job.commit if state.watch.job else None,
            "line": state.watch.describe(state.target_branch),
        },
    }


def _train_doc(state: State) -> dict[str, Any] | None:
    """The merge train as status shows it: each position's verdict, in landing order."""
    train = state.train
    if train is None:
        return None
    positions = []
    for position in train.positions:
        worker = state.worker(position.task_id)
        if position.passed is not None:
            verdict = "passed"
        elif position.failed == position.commit:
            verdict = "failed"
        elif worker is not None and worker.lifecycle is Lifecycle.CHECKING:
            verdict = "gating"
        else:
            verdict = "waiting"
        positions.append({"task_id": position.task_id, "commit": position.commit, "verdict": verdict})
    return {
        "base_sha": train.base_sha,
        "positions": positions,
        "rebuilds": train.rebuilds,
        "starved_at": format_z(train.starved_at) if train.starved_at else None,
        "push_attempts": train.push_attempts,
        "next_attempt_at": format_z(train.next_attempt_at) if train.next_attempt_at else None,
        "last_error": train.last_error,
    }


def _train_line(train: dict[str, Any] | None) -> str | None:
    """`train: RQ-0003 passed, RQ-0004 gating, RQ-0005 waiting on 1a2b3c4d5e`, with trouble after it."""
    if not train or not train["positions"]:
        return None
    stops = ", ".join(f"{p['task_id']} {p['verdict']}" for p in train["positions"])
    line = f"train: {stops} on {train['base_sha'][:10]}"
    if train["starved_at"]:
        line += f"; starved since {train['starved_at']} ({train['rebuilds']} rebuilds by outside pushes)"
    if train["next_attempt_at"]:
        line += f"; push {train['push_attempts']} lost ({one_line(train['last_error'], 120)}), "
        line += f"next at {train['next_attempt_at']}"
    return line


def _runner_pause_doc(pause: RunnerPause, now: datetime) -> dict[str, Any]:
    """A runner's pause after a usage or rate limit; one that is over is kept for its strikes."""
    return {
        "runner": pause.runner,
        "since": format_z(pause.since),
        "until": format_z(pause.until),
        "reason": pause.reason,
        "strikes": pause.strikes,
        "active": pause.active(now),
        "line": pause.describe(now),
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
        "duration_seconds": int(((worker.completed_at or now) - worker.started_at).total_seconds()),
        "attempts_left": max(0, checkout.config.agent.max_attempts - worker.attempt),
        "usage": None if (spend := Spend.of(worker.usage)) is None else spend.as_dict(),
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
    """What a person reads: the summary line and any alarm first, then the queue and the workers.
    Text from files and tasks is printed escaped (ralph.text), never obeyed."""
    lines = [printable(doc["summary"]["line"])]
    lines.extend(alarms(doc, now))
    lines.append(f"base: {doc['remote']}/{doc['target_branch']}    repository: {doc['repository']}")
    if doc["paused"]:
        p = doc["paused"]
        why = f": {one_line(p['reason'], 200)}" if p["reason"] else ""
        lines.append(
            f"PAUSED since {one_line(p['since'])} by {one_line(p['by'])}{why} "
            "(no new tasks start; `ralph resume`)"
        )
    for pause in doc["runner_pauses"]:
        if pause["active"]:
            lines.append(
                f"PAUSED: {one_line(pause['line'], 300)} (no new {one_line(pause['runner'])} agent starts; "
                "`ralph resume` to go on now)"
            )
    if doc["queue_error"]:
        lines.append(f"queue: unreadable: {one_line(doc['queue_error'], 400)}")
    elif doc["queue"] is not None:
        q, a = doc["queue"], doc["archive"] or {}
        parts = [f"{n} {s}" for s, n in q.items() if n]
        lines.append(
            f"queue: {', '.join(parts) or 'empty'}    "
            f"done archive: {a.get('done', 0)} done, {a.get('rejected', 0)} rejected"
        )
    train = _train_line(doc["train"])
    if train:
        lines.append(one_line(train, 2000))
    workers = doc["workers"]
    if not workers:
        lines.append("workers: none" + ("" if doc["state_exists"] else " (no tick has run yet)"))
        return _escaped(lines)
    rows = []
    for w in workers:
        job = w["job"]
        rows.append(
            [
                w["task_id"],
                w["lifecycle"],
                f"{w['attempt']}/{w['max_attempts']}",
                duration(timedelta(seconds=w["duration_seconds"])),
                f"{job['kind']} pid {job['pid']}, {duration(timedelta(seconds=job['elapsed_seconds']))}"
                if job
                else "-",
                describe_spend(_spend(w["usage"])),
                one_line(w["last_error"], 60),
            ]
        )
    held = [p for p in doc["runner_pauses"] if p["active"]]
    headers = ["TASK", "LIFECYCLE", "ATTEMPT", "TIME", "JOB", "COST", "LAST ERROR"]
    rendered = table(headers, rows).splitlines()
    lines.append(rendered[0])
    for w, row in zip(workers, rendered[1:], strict=True):
        lines.append(row)
        lines.extend(f"    {detail}" for detail in _details(w, now, held))
    return _escaped(lines)


def _escaped(lines: list[str]) -> str:
    # Every line, not only the fields known to come from files: a marker in a workspace is the agent's,
    # and any of its fields may hold an escape sequence.
    return "\n".join(printable(line) for line in lines)


def alarms(doc: dict[str, Any], now: datetime) -> list[str]:
    """The lines that say ticks cannot do their work, for the top of status (and of the page)."""
    out = []
    if doc["base_error"]:
        out.append(f"BASE BRANCH MISSING: {one_line(doc['base_error'], 400)}")
    health = doc["health"]
    if not health["ok"]:
        since = f" (since {health['since']})" if health["since"] else ""
        out.append(f"TICKS {health['verdict'].upper()}: {one_line(health['problem'], 400)}{since}")
    red = (doc.get("base_watch") or {}).get("line")  # absent when only tick health could be read
    if red:
        out.append(one_line(red, 400))
    return out


def _spend(usage: dict[str, Any] | None) -> Spend | None:
    return None if usage is None else Spend(**usage)


def _details(w: dict[str, Any], now: datetime, held: list[dict[str, Any]]) -> list[str]:
    """The lines under a worker's row: where its log is, what its markers say, and what comes next."""
    out = []
    if w["log_path"] and w["lifecycle"] != "completed":
        out.append(f"log: {printable(w['log_path'])}")
    ci = w["ci_failure"]
    if ci:
        how = "timed out" if ci["timed_out"] else f"exit {ci['exit_code']}"
        out.append(
            f"CI failed ({how}) at {one_line(ci['generated_at'])}; remediations {w['remediations']}; "
            f"log: {one_line(ci['log_path'], 200)}"
        )
    blocked = w["blocked_push"]
    if blocked:
        out.append(
            f"push blocked ({blocked['attempt']}/{blocked['max_attempts']}): "
            f"{one_line(blocked['reason'], 100)}"
        )
    out.extend(_next_step(w, now, held))
    return out


def _next_step(w: dict[str, Any], now: datetime, held: list[dict[str, Any]]) -> list[str]:
    """When a failed task starts again, or an integrating one tries its push, as selection decides
    (ralph.queue.why_not_runnable): never a time in the past, nor one for a task with no attempts left."""
    task, lifecycle, at = w["task_id"], w["lifecycle"], w["next_attempt_at"]
    due = at is not None and datetime.fromisoformat(at) > now
    if lifecycle == "integrating":
        return [f"next push attempt at {at}"] if due else []
    if lifecycle != "failed":
        return []
    if w["attempts_left"] == 0:
        return [
            f"no attempts left ({w['attempt']}/{w['max_attempts']}): not retried on its own; "
            f"`ralph retry {task}` starts a fresh round"
        ]
    if at is None:
        return [f"not retried on its own (stopped, or closed elsewhere); `ralph retry {task}` runs it again"]
    if held:
        # A runner's pause after a usage limit holds every new start back, this one too.
        return [f"next attempt once the pause ends: {one_line(held[0]['line'], 200)}"]
    if due:
        return [f"next attempt at {at}"]
    return ["next attempt: at the next tick"]


# --- every host: claims and shared facts on the remote ---------------------------------------------


def hosts_doc(checkout: Checkout, now: datetime) -> dict[str, Any]:
    """The `hosts` section of `ralph status --all-hosts --json` (README "Running on several machines")."""
    claims = Claims.for_checkout(checkout)
    try:
        board, error = claims.read_all(), None
    except GitError as e:
        board, error = Board(), f"cannot read the claims on {checkout.remote}: {e}"
    return {
        "host": claims.host,
        "mode": checkout.config.hosts.mode,
        "claim_ttl_minutes": checkout.config.hosts.claim_ttl_minutes,
        "error": error,
        "claims": [_claim_doc(c, board, claims.ttl, now) for _, c in sorted(board.claims.items())],
        "facts": [_facts_doc(f) for _, f in sorted(board.facts.items())],
    }


def _claim_doc(claim: Claim, board: Board, ttl: timedelta, now: datetime) -> dict[str, Any]:
    doc = claim.doc
    beat = claim.age(now)
    return {
        "task_id": claim.task_id,
        "host": None if doc is None else doc.host,
        "here": board.held.get(claim.task_id) == claim.sha,
        "attempt": None if doc is None else doc.attempt,
        "lifecycle": None if doc is None else doc.lifecycle,
        "started_at": None if doc is None else format_z(doc.started_at),
        "heartbeat": None if doc is None else format_z(doc.heartbeat),
        "age_seconds": None if doc is None else int((now - doc.started_at).total_seconds()),
        "heartbeat_age_seconds": None if beat is None else int(beat.total_seconds()),
        "stale": claim.stale(now, ttl),
        "readable": doc is not None,
        "sha": claim.sha,
    }


def _facts_doc(facts: Facts) -> dict[str, Any]:
    doc = facts.doc
    return {
        "task_id": facts.task_id,
        "attempts": doc.attempts,
        "last_attempt_at": format_z(doc.last_attempt_at) if doc.last_attempt_at else None,
        "last_host": doc.last_host,
        "cancelled": None if doc.cancelled is None else _mark_doc(doc.cancelled),
        "blocked": None if doc.blocked is None else _mark_doc(doc.blocked),
        "cleared": None if doc.cleared is None else _mark_doc(doc.cleared),
        "readable": facts.readable,
    }


def _mark_doc(mark: Mark) -> dict[str, Any]:
    return {"at": format_z(mark.at), "host": mark.host, "reason": mark.reason}


def render_hosts(doc: dict[str, Any], now: datetime) -> str:
    """The claims of every host, then the shared facts; escaped like the rest of status."""
    lines = [
        f"hosts: this checkout is {doc['host']} (hosts.mode = {doc['mode']}; a claim is stale after "
        f"{doc['claim_ttl_minutes']:g} min without a heartbeat)"
    ]
    if doc["error"]:
        lines.append(f"HOSTS UNKNOWN: {one_line(doc['error'], 400)}")
        return _escaped(lines)
    rows = [_claim_row(c) for c in doc["claims"]]
    if rows:
        lines.extend(
            table(["TASK", "HOST", "ATTEMPT", "LIFECYCLE", "AGE", "HEARTBEAT", ""], rows).splitlines()
        )
    else:
        lines.append("claims: none (no host is working on a task)")
    for f in doc["facts"]:
        said = [f"{f['attempts']} attempt{'s' if f['attempts'] != 1 else ''} started"]
        if f["last_host"]:
            said[0] += f", last on {f['last_host']} at {f['last_attempt_at']}"
        for what in ("cancelled", "blocked", "cleared"):
            if f[what]:
                m = f[what]
                shout = what.upper() if what != "cleared" else "a fresh round"
                said.append(f"{shout} by {m['host']} at {m['at']}: {one_line(m['reason'], 200)}")
        lines.append(f"{f['task_id']}: " + "; ".join(said))
    return _escaped(lines)


def _claim_row(c: dict[str, Any]) -> list[str]:
    def seconds(key: str) -> str:
        return "-" if c[key] is None else duration(timedelta(seconds=c[key]))

    mark = ""
    if c["stale"]:
        mark = ("STALE" if c["readable"] else "UNREADABLE") + ": may be taken over"
    return [
        c["task_id"],
        (c["host"] or "?") + (" (here)" if c["here"] else ""),
        str(c["attempt"] or "-"),
        c["lifecycle"] or "-",
        seconds("age_seconds"),
        seconds("heartbeat_age_seconds") + (" ago" if c["heartbeat_age_seconds"] is not None else ""),
        mark,
    ]
