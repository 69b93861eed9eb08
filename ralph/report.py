"""The status page: one self-contained HTML file a team can open or serve with any static web server.

The summary and any alarm on top, the queue as a dependency graph coloured by status, a timeline of
each task's agent, gate, remediation and landing, the history table and the statistics. No script,
no stylesheet or font from elsewhere, no image but inline SVG, and a Content-Security-Policy that
forbids any fetch; a meta refresh reloads it when served. `ralph report --html FILE` writes it, and
with `report.html_path` set every tick that changed something rewrites it (atomically).
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ralph import __version__
from ralph.checkout import Checkout
from ralph.clock import format_z
from ralph.errors import RalphError
from ralph.files import write_atomic
from ralph.history import Spend, TaskRun, describe_spend
from ralph.queue import Task, TaskStatus
from ralph.queues import Queues
from ralph.state import Lifecycle, Worker
from ralph.statistics import Stats, compute, percentile
from ralph.summary import WINDOW, Looked, base_problem, look
from ralph.text import duration, one_line, printable

logger = logging.getLogger(__name__)

REFRESH_S = 60  # how often a served page reloads itself
MAX_NODES = 200  # tasks in the graph; a bigger queue shows its first ones (the note says so)
MAX_LANES = 60  # tasks in the timeline, the latest
PAGE_MODE = 0o644  # a new page is readable by a web server running as another user

NodeStatus = str  # landed, in_flight, failed, blocked, runnable, waiting, draft, rejected
_LEGEND = (
    ("landed", "landed / done"),
    ("in_flight", "in flight"),
    ("failed", "failed"),
    ("blocked", "blocked"),
    ("runnable", "runnable"),
    ("waiting", "waiting"),
    ("draft", "draft"),
    ("rejected", "rejected"),
)
_PHASES = (("agent", "agent"), ("gate", "CI gate"), ("remediation", "remediation"), ("landing", "landing"))


def esc(text: object) -> str:
    """Text from a file or a task, safe inside HTML: markup escaped, control characters shown."""
    return html.escape(printable(str(text)), quote=True)


# --- the page -------------------------------------------------------------------------------------------


def build_page(checkout: Checkout, now: datetime, *, since: datetime | None) -> str:
    looked, queue_error = look(checkout, now, since=since)
    stats = compute(looked.runs, since=since, now=now)
    alarms = []
    problem = base_problem(checkout, looked.base)
    if problem:
        alarms.append(f"Base branch missing: {problem}")
    health = looked.summary.health
    if not health.ok and health.problem:
        alarms.append(f"Ticks {health.verdict}: {health.problem}")
    if queue_error:
        alarms.append(f"Queue unreadable: {queue_error}")
    title = f"ralph · {checkout.root.name} · {looked.base}"
    parts = [
        _head(title),
        "<body>",
        f"<h1>{esc(title)}</h1>",
        f'<p id="summary" class="summary">{esc(looked.summary.line(now))}</p>',
        *(f'<p class="alarm">{esc(one_line(a, 600))}</p>' for a in alarms),
        _workers_section(looked, now),
        _graph_section(looked, now, max_attempts=checkout.config.agent.max_attempts),
        _timeline_section(looked.runs, now, since),
        _history_section(looked.runs),
        _stats_section(stats),
        f"<footer>Written {esc(format_z(now))} by ralph {esc(__version__)}; "
        f"reloads every {REFRESH_S} s when served.</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _head(title: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{_STYLE}</style>
</head>"""


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
h2 { font-size: 1.1em; margin: 1.6em 0 .5em; }
.summary { font-weight: 600; font-size: 1.05em; }
.alarm { background: #c62828; color: #fff; padding: .5em .8em; border-radius: 4px; font-weight: 600; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td { white-space: nowrap; } td:last-child, #history td:nth-child(4) { white-space: normal; }
td.num { text-align: right; }
.note { color: #666; }
svg { background: #fff; border: 1px solid #ddd; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #1b1b1b; }
svg text.id { font-weight: 700; }
.node rect { stroke: #555; stroke-width: 1; }
.node.landed rect { fill: #a5d6a7; } .node.in_flight rect { fill: #90caf9; }
.node.failed rect { fill: #ef9a9a; } .node.blocked rect { fill: #ffcc80; }
.node.runnable rect { fill: #fff; stroke-width: 2; } .node.waiting rect { fill: #eee; }
.node.draft rect { fill: #fff; stroke-dasharray: 4 3; } .node.rejected rect { fill: #cfcfcf; }
.node.rejected text { text-decoration: line-through; }
.edge { stroke: #888; fill: none; }
.phase.agent { fill: #1e88e5; } .phase.gate { fill: #8e24aa; }
.phase.remediation { fill: #f9a825; } .phase.landing { fill: #43a047; }
.phase.open { opacity: .6; }
.outcome.landed, .outcome.done { fill: #2e7d32; } .outcome.failed { fill: #c62828; }
.outcome.blocked { fill: #ef6c00; } .outcome.in_flight { fill: #1565c0; } .outcome.rejected { fill: #777; }
.axis { stroke: #ccc; }
.legend span { display: inline-block; margin-right: 1em; }
.legend i { display: inline-block; width: .9em; height: .9em; margin-right: .3em; border: 1px solid #555;
  vertical-align: -2px; }
.swatch-landed { background: #a5d6a7; } .swatch-in_flight { background: #90caf9; }
.swatch-failed { background: #ef9a9a; } .swatch-blocked { background: #ffcc80; }
.swatch-runnable { background: #fff; } .swatch-waiting { background: #eee; }
.swatch-draft { background: #fff; border-style: dashed !important; } .swatch-rejected { background: #cfcfcf; }
.swatch-agent { background: #1e88e5; } .swatch-gate { background: #8e24aa; }
.swatch-remediation { background: #f9a825; } .swatch-landing { background: #43a047; }
footer { margin-top: 2em; color: #666; font-size: .9em; }
"""


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, table_id: str, numeric: int = 0) -> str:
    """Cells are HTML already (escaped by the caller); the last `numeric` columns align right."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [
            f'<td class="num">{c}</td>' if i >= len(row) - numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        return f'<p class="note" id="{table_id}">None.</p>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# --- workers ---------------------------------------------------------------------------------------------


def _workers_section(looked: Looked, now: datetime) -> str:
    rows = []
    for w in looked.state.workers:
        took = (w.completed_at or now) - w.started_at
        job = w.job if w.lifecycle in Lifecycle.active() else None
        rows.append(
            [
                esc(w.task_id),
                esc(w.lifecycle),
                esc(w.attempt),
                esc(duration(took)),
                esc(f"{job.kind} pid {job.pid}") if job else "-",
                esc(describe_spend(Spend.of(w.usage))),
                esc(one_line(w.last_error, 160)),
            ]
        )
    headers = ["task", "lifecycle", "attempt", "time", "job", "cost", "last error"]
    return "<h2>Workers</h2>\n" + _table(headers, rows, table_id="workers")


# --- the dependency graph ----------------------------------------------------------------------------

NODE_W, NODE_H, COL_W, ROW_H, PAD = 170, 40, 220, 52, 16


@dataclass(frozen=True)
class Node:
    task: Task
    status: NodeStatus
    layer: int
    row: int

    @property
    def x(self) -> int:
        return PAD + self.layer * COL_W

    @property
    def y(self) -> int:
        return PAD + self.row * ROW_H


def graph_nodes(
    queues: Queues,
    workers: Mapping[str, Worker],
    runs: Sequence[TaskRun],
    now: datetime,
    *,
    max_attempts: int,
) -> tuple[list[Node], int]:
    """The queue's tasks, the archived ones they depend on and those closed lately, laid out in
    columns by dependency depth; and how many were left out (over MAX_NODES)."""
    recent = {r.task_id for r in runs}
    wanted = {d for t in queues.queue.tasks for d in t.depends_on}
    archived = [t for t in queues.done.tasks if t.id in wanted or t.id in recent]
    tasks = [*archived, *queues.queue.tasks]
    left_out = max(0, len(tasks) - MAX_NODES)
    tasks = tasks[-MAX_NODES:] if left_out else tasks  # the queue's own tasks go last: keep them
    by_id = {t.id: t for t in tasks}
    runnable = {t.id for t in queues.runnable(workers, now, max_attempts=max_attempts)}
    layers: dict[str, int] = {}

    def layer(task_id: str, seen: frozenset[str]) -> int:
        if task_id in layers:
            return layers[task_id]
        deps = [d for d in by_id[task_id].depends_on if d in by_id and d not in seen]
        value = 1 + max((layer(d, seen | {task_id}) for d in deps), default=-1)
        layers[task_id] = value
        return value

    rows: dict[int, int] = {}
    nodes = []
    for task in tasks:
        depth = layer(task.id, frozenset())
        row = rows.get(depth, 0)
        rows[depth] = row + 1
        nodes.append(Node(task, _node_status(task, workers.get(task.id), runnable), depth, row))
    return nodes, left_out


def _node_status(task: Task, worker: Worker | None, runnable: set[str]) -> NodeStatus:
    if task.status is TaskStatus.DONE:
        return "landed"
    if task.status is TaskStatus.REJECTED:
        return "rejected"
    if worker is not None:
        if worker.lifecycle not in Lifecycle.terminal():
            return "in_flight"
        if worker.lifecycle is Lifecycle.BLOCKED_PUSH:
            return "blocked"
        if worker.lifecycle is Lifecycle.FAILED and task.id not in runnable:
            return "failed"
        if worker.lifecycle is Lifecycle.COMPLETED:
            return "landed"
    if task.status is TaskStatus.DRAFT:
        return "draft"
    return "runnable" if task.id in runnable else "waiting"


def graph_svg(nodes: Sequence[Node]) -> str:
    if not nodes:
        return '<p class="note" id="graph">The queue is empty.</p>'
    at = {n.task.id: n for n in nodes}
    width = PAD * 2 + (max(n.layer for n in nodes) * COL_W) + NODE_W
    height = PAD * 2 + (max(n.row for n in nodes) * ROW_H) + NODE_H
    edges = []
    for node in nodes:
        for dep in node.task.depends_on:
            source = at.get(dep)
            if source is None:
                continue
            x1, y1 = source.x + NODE_W, source.y + NODE_H // 2
            x2, y2 = node.x, node.y + NODE_H // 2
            bend = max((x2 - x1) // 2, 20)
            edges.append(
                f'<path class="edge" data-from="{esc(dep)}" data-to="{esc(node.task.id)}" '
                f'd="M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}" marker-end="url(#arrow)"/>'
            )
    boxes = []
    for node in nodes:
        task = node.task
        status = node.status.replace("_", " ")
        boxes.append(
            f'<g class="node {node.status}" data-task="{esc(task.id)}" '
            f'transform="translate({node.x},{node.y})">'
            f"<title>{esc(task.id)} ({status}): {esc(one_line(task.title, 200))}</title>"
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="5"/>'
            f'<text class="id" x="8" y="16">{esc(task.id)}</text>'
            f'<text x="8" y="31">{esc(one_line(task.title, 26))}</text></g>'
        )
    return (
        f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="the queue as a dependency graph">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#888"/></marker></defs>'
        + "".join(edges)
        + "".join(boxes)
        + "</svg>"
    )


def _graph_section(looked: Looked, now: datetime, *, max_attempts: int) -> str:
    if looked.queues is None:
        return '<h2>Queue</h2>\n<p class="note" id="graph">The queue cannot be read (see above).</p>'
    nodes, left_out = graph_nodes(
        looked.queues, looked.state.by_task(), looked.runs, now, max_attempts=max_attempts
    )
    legend = "".join(f'<span><i class="swatch-{k}"></i>{esc(label)}</span>' for k, label in _LEGEND)
    note = f'<p class="note">{left_out} more tasks are not shown.</p>' if left_out else ""
    return (
        '<h2>Queue</h2>\n<p class="note">Arrows point from a task to those that wait for it.</p>\n'
        + graph_svg(nodes)
        + f'\n<p class="legend">{legend}</p>{note}'
    )


# --- the timeline ---------------------------------------------------------------------------------------

LABEL_W, PLOT_W, LANE_H, TOP = 110, 860, 22, 26


def timeline_svg(runs: Sequence[TaskRun], now: datetime, since: datetime | None) -> str:
    lanes = [r for r in runs if r.phases][-MAX_LANES:]
    if not lanes:
        return '<p class="note" id="timeline">No agent, gate or landing ran on this host in this window.</p>'
    start = min(p.start for r in lanes for p in r.phases)
    if since is not None:
        start = max(start, since)
    span = max((now - start).total_seconds(), 60.0)

    def x(when: datetime) -> float:
        return LABEL_W + max(0.0, min(1.0, (when - start).total_seconds() / span)) * PLOT_W

    width, height = LABEL_W + PLOT_W + 20, TOP + len(lanes) * LANE_H + 10
    parts = []
    for i in range(7):
        when = start + timedelta(seconds=span * i / 6)
        tx = x(when)
        label = when.strftime("%H:%M:%S" if span <= 3600 else "%H:%M" if span <= 2 * 86400 else "%m-%d %H:%M")
        parts.append(
            f'<line class="axis" x1="{tx:.1f}" y1="{TOP - 6}" x2="{tx:.1f}" y2="{height - 6}"/>'
            f'<text x="{tx:.1f}" y="{TOP - 10}" text-anchor="middle">{label}</text>'
        )
    for i, run in enumerate(lanes):
        y = TOP + i * LANE_H
        bars = []
        for phase in run.phases:
            if phase.end < start:
                continue
            x1, x2 = x(phase.start), x(phase.end)
            tip = (
                f"{run.task_id} {phase.kind}, attempt {phase.attempt}: {format_z(phase.start)} to "
                f"{'now' if phase.open else format_z(phase.end)} ({duration(phase.end - phase.start)})"
            )
            bars.append(
                f'<rect class="phase {phase.kind}{" open" if phase.open else ""}" x="{x1:.1f}" y="{y + 4}" '
                f'width="{max(x2 - x1, 2.0):.1f}" height="{LANE_H - 8}"><title>{esc(tip)}</title></rect>'
            )
        end = x(now if run.outcome == "in_flight" else run.at)  # one in flight: where it is now
        parts.append(
            f'<g class="lane" data-task="{esc(run.task_id)}" data-outcome="{run.outcome}">'
            f'<text class="id" x="4" y="{y + LANE_H - 7}">{esc(run.task_id)}</text>'
            + "".join(bars)
            + f'<circle class="outcome {run.outcome}" cx="{end:.1f}" cy="{y + LANE_H // 2}" r="4">'
            f"<title>{esc(run.task_id)}: {run.outcome.replace('_', ' ')}</title></circle></g>"
        )
    return (
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="a timeline of each task\'s phases (UTC)">'
        + "".join(parts)
        + "</svg>"
    )


def _timeline_section(runs: Sequence[TaskRun], now: datetime, since: datetime | None) -> str:
    legend = "".join(f'<span><i class="swatch-{k}"></i>{esc(label)}</span>' for k, label in _PHASES)
    return (
        "<h2>Timeline (UTC)</h2>\n"
        + timeline_svg(runs, now, since)
        + f'\n<p class="legend">{legend}<span>● how it ended</span></p>'
    )


# --- history and statistics -------------------------------------------------------------------------------


def _history_section(runs: Sequence[TaskRun]) -> str:
    rows = []
    for run in reversed(runs):  # the latest first
        took = run.took
        rows.append(
            [
                esc(format_z(run.at)),
                esc(run.task_id),
                esc(run.outcome.replace("_", " ")),
                esc(one_line(run.title, 80)),
                esc(duration(took)) if took is not None else "-",
                esc(run.attempts or "-"),
                esc(describe_spend(run.spend)),
                esc(run.sha[:10] if run.sha else one_line(run.error, 120)),
            ]
        )
    headers = ["when", "task", "outcome", "title", "took", "attempts", "cost", "landed / why"]
    return "<h2>History</h2>\n" + _table(headers, rows, table_id="history")


def _stats_section(stats: Stats) -> str:
    def td(value: timedelta | None) -> str:
        return duration(value) if value is not None else "—"

    rate = stats.gate_pass_rate
    per_hour = stats.per_hour
    rows = [
        ["window", f"{format_z(stats.start)} to {format_z(stats.end)}"],
        ["landed", str(stats.landed)],
        ["landed per hour", f"{per_hour:.2f}" if per_hour is not None else "—"],
        [
            "queued to landed, median / p90",
            f"{td(percentile(stats.time_to_land, 0.5))} / {td(percentile(stats.time_to_land, 0.9))}",
        ],
        [
            "first start to landed, median / p90",
            f"{td(percentile(stats.work_to_land, 0.5))} / {td(percentile(stats.work_to_land, 0.9))}",
        ],
        ["CI gate pass rate", f"{rate:.0%} of {stats.gate_runs}" if rate is not None else "—"],
        ["remediations", str(stats.remediations)],
        ["retries", str(stats.retries)],
        ["push races", str(stats.push_races) if stats.push_races is not None else "—"],
        ["failed / blocked / rejected", f"{stats.failed} / {stats.blocked} / {stats.rejected}"],
        ["in flight", str(stats.in_flight)],
        ["cost", describe_spend(stats.spend)],
    ]
    cells = [[esc(a), esc(b)] for a, b in rows]
    return "<h2>Statistics</h2>\n" + _table(["", "value"], cells, table_id="stats")


# --- writing it -----------------------------------------------------------------------------------------


def write_page(path: Path, page: str) -> None:
    """Replace the page atomically: a web server serving it never sends half of one."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, page.encode())
    if new:
        os.chmod(path, PAGE_MODE)


def page_path(checkout: Checkout) -> Path | None:
    """Where report.html_path says (relative to the checkout), or None when it is not set."""
    configured = checkout.config.report.html_path
    if not configured:
        return None
    path = Path(configured).expanduser()
    return path if path.is_absolute() else checkout.root / path


def refresh_page(checkout: Checkout, *, changed: bool, now: datetime) -> None:
    """After a tick: rewrite report.html_path if the tick changed something (or there is no page
    yet). Never fails the tick: a page that cannot be written is a warning."""
    target = page_path(checkout)
    if target is None or (not changed and target.exists()):
        return
    try:
        write_page(target, build_page(checkout, now, since=now - WINDOW))
    except (RalphError, OSError) as e:
        logger.warning("could not rewrite the status page %s (report.html_path): %s", target, e)
