"""The command line: click only. Parse, build collaborators, call one function, map its exit code."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ralph import __version__
from ralph.constants import MAX_NOTE_CHARS, MAX_REASON_CHARS, MAX_TASKS_PER_TICK, MAX_WORKERS, RUNNER_NAMES
from ralph.errors import ExitCode, Failure, classify
from ralph.log import logs_to_file, quiet_info_logs, setup_logging
from ralph.text import printable

if TYPE_CHECKING:
    from ralph.queuedoc import Position

logger = logging.getLogger("ralph")


class RalphGroup(click.Group):
    """One top-level handler: ralph.errors.classify says what an exception means; a RalphError or an
    exhausted resource is one line on stderr (exit 1), anything else is a bug (exit 3)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            # `ralph queue show ID | head -1`: the reader left, which is no error. Python would flush
            # stdout again at exit and fail once more, so it is pointed at /dev/null first.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(int(ExitCode.BROKEN_PIPE))
        except (Exception, KeyboardInterrupt) as e:
            failure = classify(e)
            if failure.bug:
                # Rule 3: the traceback goes to the log for the report; stderr's last line is one line.
                logger.critical("a bug in ralph; the traceback, for the report:", exc_info=e)
                click.echo(
                    f"ralph: {_clip(printable(failure.message))}; please report it with the traceback",
                    err=True,
                )
            else:
                _say(failure)
            ctx.exit(int(failure.exit_code))


def _say(failure: Failure) -> None:
    message = printable(failure.message)  # it may quote a title or a file: shown, never obeyed
    error = failure.exit_code == ExitCode.ERROR
    if not _stderr_is_the_log():  # cron's `>>ralph.log 2>&1` beside --log-file: once is enough
        click.echo(("ralph: error: " if error else "ralph: ") + message, err=True)
    if logs_to_file() and failure.exit_code in (ExitCode.ERROR, ExitCode.LOCKED):
        # With --log-file the log is where a person looks (cron may mail nothing): say it there too.
        logger.log(logging.ERROR if error else logging.INFO, "%s", failure.message)


def _stderr_is_the_log() -> bool:
    """Whether stderr is the very file --log-file writes to (the same inode)."""
    try:
        err = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):  # no real descriptor (a test's captured stream)
        return False
    return any(
        isinstance(h, logging.handlers.WatchedFileHandler) and (h.dev, h.ino) == (err.st_dev, err.st_ino)
        for h in logging.getLogger().handlers
    )


def _at_most(limit: int) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A callback refusing a text option longer than `limit` characters (a usage error)."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None and len(value) > limit:
            raise click.BadParameter(f"{len(value):,} characters; at most {limit:,}")
        return value

    return check


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Globals:
    start: Path


def _start(ctx: click.Context) -> Path:
    obj = ctx.find_object(Globals)
    assert obj is not None
    return obj.start


def _finish(ctx: click.Context, code: ExitCode) -> None:
    # click ignores a command's return value in standalone mode; the code must go through ctx.exit.
    ctx.exit(int(code))


def _quiet_for_json(ctx: click.Context, param: click.Parameter, as_json: bool) -> bool:
    # Rule 13 (as pipx does): --json output is for programs, so INFO chatter is dropped even from
    # stderr; warnings and errors still show.
    if as_json:
        quiet_info_logs()
    return as_json


def _json_option(help_text: str = "Print one JSON document on stdout.") -> Callable[[Any], Any]:
    return click.option("--json", "as_json", is_flag=True, callback=_quiet_for_json, help=help_text)


# Named "ralph", not after the function, so usage lines read `ralph ...` however the group is invoked.
@click.group("ralph", cls=RalphGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="ralph")
@click.option(
    "-C",
    "directory",
    # exists=True: a missing DIR is a usage error (exit 2), not a git failure deep inside a command.
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Run as if started in DIR (the control checkout).",
    metavar="DIR",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Append log lines (with times) to PATH instead of stderr; safe with logrotate moving it.",
)
@click.option("-v", "--verbose", count=True, help="More detail on stderr (repeat for more).")
@click.option("-q", "--quiet", count=True, help="Less detail on stderr: -q warnings only, -qq errors only.")
@click.pass_context
def cli(ctx: click.Context, directory: Path | None, log_file: Path | None, verbose: int, quiet: int) -> None:
    """Run AI coding agents in parallel on one git repository and land their CI-verified work.

    Each `ralph run` is one short tick, meant for cron or a systemd timer: it advances every worker,
    starts new ones up to --workers, lands verified work on the base branch, and exits.

    \b
    Start here:
      ralph init                      set up .ralph/ in your checkout
      ralph task add "Fix the bug"    queue a task
      ralph run --workers 3           one tick (put this in cron)
      ralph status                    what every worker is doing
      ralph history                   what happened in the last day
    """
    setup_logging(verbose - quiet, log_file)
    ctx.obj = Globals(start=(directory or Path.cwd()).absolute())


@cli.command()
@click.option("--runner", type=click.Choice(RUNNER_NAMES), help="Agent CLI to run (default: claude).")
@click.option("--base", metavar="BRANCH", help="Branch to land on (default: the remote's HEAD branch).")
@click.option(
    "--from-rust",
    is_flag=True,
    help="Write config.toml from the Rust ralph's .ralph/config.jsonc, and say what it could not carry over.",
)
@click.pass_context
def init(ctx: click.Context, runner: str | None, base: str | None, from_rust: bool) -> None:
    """Set up .ralph/ here: config.toml, queue.json, done.json, and .gitignore entries.

    Safe to run again: it never overwrites a file that exists. In a repository the Rust ralph set
    up, its .ralph/config.jsonc and queue.jsonc/done.jsonc are used as they are.
    """
    from ralph.commands.init import init as run_init

    _finish(ctx, run_init(start=_start(ctx), runner=runner, base=base, from_rust=from_rust))


_NO_PUSH_HELP = (
    "Edit the working-tree queue files instead of committing the change to the remote base branch."
)


def _no_push_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--no-push", is_flag=True, help=_NO_PUSH_HELP)(f)


def _position_option(what: str, default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--top/--bottom, passed on as `position`: "top", "bottom", or None for the queue's default."""
    return click.option(
        "--top/--bottom",
        "position",
        default=None,
        callback=lambda _ctx, _param, top: None if top is None else "top" if top else "bottom",
        help=f"Put {what} first / last in the queue [default: {default}].",
    )


@cli.group()
def task() -> None:
    """Add and change tasks in the queue.

    Each change is one commit pushed to the base branch with a lease when the queue is tracked there
    (your working tree is not touched), or an edit of the working-tree files (--no-push, or an
    untracked queue). Only the lines of the task changed move.
    """


@task.command("add")
@click.argument("title")
@click.option("--description", "-d", help="What to do, in detail; the agent reads this.")
@click.option(
    "--depends-on",
    "depends_on",
    multiple=True,
    metavar="ID",
    help="A task that must be done (or rejected) first; repeat for several.",
)
@click.option(
    "--priority",
    type=click.Choice(["critical", "high", "medium", "low"]),
    default="medium",
    show_default=True,
    help="Queue order, not priority, decides what runs first; `ralph queue sort` orders by priority.",
)
@_position_option("it", "first, after a leading doing task, as the Rust ralph")
@_no_push_option
@click.pass_context
def task_add(
    ctx: click.Context,
    title: str,
    description: str | None,
    depends_on: tuple[str, ...],
    priority: str,
    position: Position | None,
    no_push: bool,
) -> None:
    """Add a task titled TITLE to the queue and print its id.

    When the queue is committed on the base branch (the default), the task is committed on top of
    the remote base and pushed, without touching your working tree; every tick sees it after its
    next fetch. An untracked queue, or one not pushed yet, is edited in the working tree.
    """
    from ralph.commands.task import add

    code = add(
        start=_start(ctx),
        title=title,
        description=description,
        depends_on=list(depends_on),
        priority=priority,
        push=not no_push,
        position=position,
    )
    _finish(ctx, code)


@task.command("edit")
@click.argument("task_id", metavar="ID")
@click.option("--title", help="A new title.")
@click.option("--description", "-d", help='A new description ("" removes it).')
@click.option("--priority", type=click.Choice(["critical", "high", "medium", "low"]), help="A new priority.")
@click.option(
    "--depends-on",
    "depends_on",
    multiple=True,
    metavar="ID",
    help="Replace the dependencies; repeat for several.",
)
@click.option("--no-depends-on", is_flag=True, help="Remove every dependency.")
@click.option(
    "--scheduled-start",
    metavar="TIME",
    help='Not before this RFC 3339 time, e.g. 2026-11-21T09:00:00Z ("" removes it).',
)
@click.option(
    "--status",
    type=click.Choice(["draft", "todo"]),
    help="draft: kept, but not started; todo: queued to run.",
)
@_no_push_option
@click.pass_context
def task_edit(
    ctx: click.Context,
    task_id: str,
    title: str | None,
    description: str | None,
    priority: str | None,
    depends_on: tuple[str, ...],
    no_depends_on: bool,
    scheduled_start: str | None,
    status: str | None,
    no_push: bool,
) -> None:
    """Change a queued task: its title, description, priority, dependencies, schedule or status."""
    from ralph.commands.task import edit

    if depends_on and no_depends_on:
        raise click.UsageError("--depends-on and --no-depends-on contradict each other; give one")
    code = edit(
        start=_start(ctx),
        task_id=task_id,
        title=title,
        description=description,
        priority=priority,
        depends_on=[] if no_depends_on else list(depends_on) or None,
        scheduled_start=scheduled_start,
        status=status,
        push=not no_push,
    )
    _finish(ctx, code)


@task.command("rm")
@click.argument("task_id", metavar="ID")
@_no_push_option
@click.pass_context
def task_rm(ctx: click.Context, task_id: str, no_push: bool) -> None:
    """Delete a queued task (refused while another task depends on it; `task reject` keeps a record)."""
    from ralph.commands.task import remove

    _finish(ctx, remove(start=_start(ctx), task_id=task_id, push=not no_push))


@task.command("done")
@click.argument("task_id", metavar="ID")
@click.option(
    "--note",
    callback=_at_most(MAX_NOTE_CHARS),
    help="Add this line to the task's notes.",
)
@_no_push_option
@click.pass_context
def task_done(ctx: click.Context, task_id: str, note: str | None, no_push: bool) -> None:
    """Mark a queued task done and move it to the done archive now (work done by hand, say)."""
    _finish_task(ctx, task_id, "done", note, no_push)


@task.command("reject")
@click.argument("task_id", metavar="ID")
@click.option("--note", callback=_at_most(MAX_NOTE_CHARS), help="Why; added to the task's notes.")
@_no_push_option
@click.pass_context
def task_reject(ctx: click.Context, task_id: str, note: str | None, no_push: bool) -> None:
    """Reject a queued task: moved to the done archive now, never run; a worker on it is stopped."""
    _finish_task(ctx, task_id, "rejected", note, no_push)


def _finish_task(ctx: click.Context, task_id: str, status: str, note: str | None, no_push: bool) -> None:
    from ralph.commands.task import finish

    _finish(ctx, finish(start=_start(ctx), task_id=task_id, status=status, note=note, push=not no_push))


@task.command("move")
@click.argument("task_id", metavar="ID")
@click.option("--top", is_flag=True, help="First in the queue.")
@click.option("--bottom", is_flag=True, help="Last in the queue.")
@click.option("--before", metavar="ID", help="Just before this task.")
@click.option("--after", metavar="ID", help="Just after this task.")
@_no_push_option
@click.pass_context
def task_move(
    ctx: click.Context,
    task_id: str,
    top: bool,
    bottom: bool,
    before: str | None,
    after: str | None,
    no_push: bool,
) -> None:
    """Move a queued task; queue order is the order tasks start in. Give exactly one place."""
    from ralph.commands.task import move

    code = move(
        start=_start(ctx),
        task_id=task_id,
        top=top,
        bottom=bottom,
        before=before,
        after=after,
        push=not no_push,
    )
    _finish(ctx, code)


@cli.group()
def queue() -> None:
    """Inspect, check, fill and order the task queue."""


@queue.command("list")
@click.option("--all", "include_done", is_flag=True, help="Include the done archive.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["draft", "todo", "doing", "done", "rejected"]),
    help="Only tasks with this status; repeat for several.",
)
@click.option(
    "--tag", "tags", multiple=True, metavar="TAG", help="Only tasks with this tag; repeat for any of several."
)
@click.option("--runnable", is_flag=True, help="Only the tasks a tick would start now.")
@_json_option()
@click.pass_context
def queue_list(
    ctx: click.Context,
    include_done: bool,
    statuses: tuple[str, ...],
    tags: tuple[str, ...],
    runnable: bool,
    as_json: bool,
) -> None:
    """List tasks in queue order (the order they will run in)."""
    from ralph.commands.queue import list_tasks

    code = list_tasks(
        start=_start(ctx),
        include_done=include_done,
        as_json=as_json,
        statuses=statuses,
        tags=tags,
        runnable=runnable,
    )
    _finish(ctx, code)


@queue.command("show")
@click.argument("task_id", metavar="ID")
@_json_option()
@click.pass_context
def queue_show(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show one task from the queue or the done archive."""
    from ralph.commands.queue import show

    _finish(ctx, show(start=_start(ctx), task_id=task_id, as_json=as_json))


@queue.command("validate")
@click.option("--local", is_flag=True, help="Only the working-tree files (for a pre-commit hook).")
@_json_option()
@click.pass_context
def queue_validate(ctx: click.Context, local: bool, as_json: bool) -> None:
    """Check queue and done files; exit 1 and list every problem if they are invalid.

    The working-tree files are checked, and the remote base's (as last fetched) too when they
    differ: that is what ticks read. Each problem names its file, so you can see which is which.
    """
    from ralph.commands.queue import validate

    _finish(ctx, validate(start=_start(ctx), as_json=as_json, local=local))


@queue.command("explain")
@_json_option()
@click.pass_context
def queue_explain(ctx: click.Context, as_json: bool) -> None:
    """Say for each queued task whether it can start now, and if not, why."""
    from ralph.commands.queue import explain

    _finish(ctx, explain(start=_start(ctx), as_json=as_json))


@queue.command("import")
@click.argument("source", metavar="FILE")
@_position_option("them", "first, after a task marked doing")
@_no_push_option
@click.pass_context
def queue_import(ctx: click.Context, source: str, position: Position | None, no_push: bool) -> None:
    """Add every task in FILE at once, in its order, and print their ids: all of them, or none.

    \b
    FILE (or - for stdin) is either JSON, a list of task objects (as in queue.json, ids optional),
    or a Markdown list: each item a title, the lines indented under it its description, checked
    items (- [x]) skipped.
    """
    from ralph.commands.queue import import_tasks

    code = import_tasks(
        start=_start(ctx),
        source=source,
        push=not no_push,
        position=position,
    )
    _finish(ctx, code)


@queue.command("sort")
@_no_push_option
@click.pass_context
def queue_sort(ctx: click.Context, no_push: bool) -> None:
    """Order the queue by priority, critical first; tasks of equal priority keep their order."""
    from ralph.commands.queue import sort

    _finish(ctx, sort(start=_start(ctx), push=not no_push))


@cli.command()
@click.option(
    "--all-hosts",
    is_flag=True,
    help="Also ask the remote: every host's claims (host, age, stale ones marked) and the tasks' "
    "shared attempts, cancellations and blocks.",
)
@_json_option("Print one stable JSON document on stdout (documented in the README).")
@click.pass_context
def status(ctx: click.Context, all_hosts: bool, as_json: bool) -> None:
    """A summary line, whether ticks are failing, and what every worker is doing.

    Exits 1 when ticks cannot do their work (the base branch is missing, or the last ticks failed,
    hung or could not reach the remote); the first lines say which. With --all-hosts, also when the
    remote cannot be asked.
    """
    from ralph.commands.status import status as run_status

    _finish(ctx, run_status(start=_start(ctx), as_json=as_json, all_hosts=all_hosts))


def _since(ctx: click.Context, param: click.Parameter, value: str) -> object:
    from ralph.history import SinceError, parse_since

    try:
        return parse_since(value)
    except SinceError as e:
        raise click.BadParameter(str(e)) from None
    except OverflowError:  # a time whose offset takes it past year 1 or 9999 in UTC
        raise click.BadParameter(
            f"{value[:40]!r} is out of range; give a time between 0001 and 9999"
        ) from None


def _since_option() -> Callable[[Any], Any]:
    return click.option(
        "--since",
        default="24h",
        show_default=True,
        callback=_since,
        metavar="WHEN",
        help="How far back: 30m, 24h, 7d, 2w; a time or date (2026-11-20, UTC unless it says); or all.",
    )


@cli.command()
@_since_option()
@_json_option()
@click.pass_context
def history(ctx: click.Context, since: Any, as_json: bool) -> None:
    """What landed, failed, was blocked or is in flight, when, how long it took and in how many attempts.

    From this host's events.jsonl and the done archive (which also shows tasks landed elsewhere).
    """
    from ralph.commands.history import history as show_history

    _finish(ctx, show_history(start=_start(ctx), since=since, as_json=as_json))


@cli.command()
@_since_option()
@_json_option()
@click.pass_context
def stats(ctx: click.Context, since: Any, as_json: bool) -> None:
    """Throughput, time from queued to landed, CI gate pass rate, remediations, push races and cost."""
    from ralph.commands.stats import stats as show_stats

    _finish(ctx, show_stats(start=_start(ctx), since=since, as_json=as_json))


@cli.command()
@click.option(
    "--html", "html_file", required=True, metavar="FILE", help="Write the page to FILE (- for stdout)."
)
@_since_option()
@click.pass_context
def report(ctx: click.Context, html_file: str, since: Any) -> None:
    """Write a status page: one self-contained HTML file (summary, dependency graph, timeline, history).

    It fetches nothing and runs no script, so any static web server can serve it, and it reloads
    itself every minute. Set report.html_path to have every tick that changed something rewrite it.
    """
    from ralph.commands.report import report as write_report

    _finish(ctx, write_report(start=_start(ctx), html_file=html_file, since=since))


@cli.command()
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=MAX_WORKERS),
    metavar="N",
    help=f"Jobs (agents and CI gates) running at once, 1-{MAX_WORKERS} [default: parallel.workers, 3].",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(min=0, max=MAX_TASKS_PER_TICK),
    default=0,
    metavar="N",
    help=f"Start at most N new tasks in this tick, up to {MAX_TASKS_PER_TICK}; 0 means no limit.",
)
@click.option("--dry-run", is_flag=True, help="Print what would start; change nothing (no lock, no fetch).")
@click.option("--allow-root", is_flag=True, help="Run as root anyway (only inside a throwaway sandbox).")
@click.option(
    "--only",
    metavar="ID",
    help="Start this task alone, out of queue order (if it may start: its dependencies met).",
)
@click.option("--include-draft", is_flag=True, help="Start draft tasks too, after the todo ones.")
@_json_option("Print a summary of the tick as one JSON document on stdout.")
@click.pass_context
def run(
    ctx: click.Context,
    workers: int | None,
    max_tasks: int,
    dry_run: bool,
    allow_root: bool,
    only: str | None,
    include_draft: bool,
    as_json: bool,
) -> None:
    """One tick: advance every worker, start new ones up to --workers, land verified work, exit.

    Meant for cron or a systemd timer, every minute or so. A tick never waits on an agent or a CI
    run: they are detached jobs, and the next tick reads their results. Exits 75 at once, changing
    nothing, when another tick holds the lock.
    """
    from ralph.commands.run import run as run_tick

    code = run_tick(
        start=_start(ctx),
        workers=workers,
        max_tasks=max_tasks,
        dry_run=dry_run,
        allow_root=allow_root,
        as_json=as_json,
        only=only,
        include_draft=include_draft,
    )
    _finish(ctx, code)


@cli.command()
@click.argument("task_id", metavar="TASK")
@click.option("--ci", is_flag=True, help="The latest CI gate run's log instead of the agent's.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the job runs.")
@click.pass_context
def logs(ctx: click.Context, task_id: str, ci: bool, follow: bool) -> None:
    """Print TASK's agent log (every attempt and remediation), or its CI log."""
    from ralph.commands.logs import logs as show_logs

    _finish(ctx, show_logs(start=_start(ctx), task_id=task_id, ci=ci, follow=follow))


@cli.command()
@click.argument("task_id", metavar="TASK")
@click.pass_context
def cancel(ctx: click.Context, task_id: str) -> None:
    """Stop TASK's job and its process group, and mark it failed; it is not retried on its own.

    The cancellation is recorded on the remote, so no host starts TASK again until `ralph retry`, and
    a host working on it loses its claim and stops without landing. Works from any host.
    """
    from ralph.commands.cancel import cancel as cancel_task

    _finish(ctx, cancel_task(start=_start(ctx), task_id=task_id))


@cli.command()
@click.argument("task_id", metavar="TASK")
@click.pass_context
def retry(ctx: click.Context, task_id: str) -> None:
    """Give a failed or blocked TASK another go, keeping its work.

    Verified work blocked on its push goes back to landing with fresh push attempts. Anything else
    starts over with fresh attempts; its earlier commits are kept in refs/ralph/attic/. TASK's
    record on the remote (attempts, a cancellation, a block) is cleared for every host; from a host
    with no worker for TASK, that is all it does.
    """
    from ralph.commands.retry import retry as retry_task

    _finish(ctx, retry_task(start=_start(ctx), task_id=task_id))


@cli.command()
@click.argument("task_id", metavar="TASK")
@click.option(
    "--reject", is_flag=True, help="Also mark the task rejected in the queue, so it never runs again."
)
@click.pass_context
def discard(ctx: click.Context, task_id: str, reject: bool) -> None:
    """Stop TASK's worker, keep its commits in refs/ralph/attic/, remove its workspace and record.

    The task is parked as a draft in the queue (rejected with --reject); its claim and record on the
    remote go too, so a host working on it elsewhere stops without landing. Works from any host.
    """
    from ralph.commands.discard import discard as discard_task

    _finish(ctx, discard_task(start=_start(ctx), task_id=task_id, reject=reject))


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Build the sandbox here (new or empty) instead of a temporary directory.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=MAX_WORKERS),
    default=3,
    show_default=True,
    help=f"Workers per tick, 1-{MAX_WORKERS}.",
)
@click.pass_context
def demo(ctx: click.Context, directory: Path | None, workers: int) -> None:
    """Watch the whole loop in a sandbox: tasks in, CI-verified commits out on main.

    Builds a bare origin and a control clone, queues sample tasks (a dependency chain, two tasks
    that edit the same line, one that fails the CI gate first), and ticks with a scripted agent
    until every task has landed. No model is called; nothing outside the sandbox is touched.
    """
    from ralph.commands.demo import demo as run_demo

    _finish(ctx, run_demo(directory=directory, workers=workers))


@cli.command()
@click.option(
    "--reason",
    default="",
    callback=_at_most(MAX_REASON_CHARS),
    help=f"Why (at most {MAX_REASON_CHARS} characters); shown by `ralph status` and every tick's log line.",
)
@click.pass_context
def pause(ctx: click.Context, reason: str) -> None:
    """Stop starting new tasks; work in flight still runs, is verified and lands. Undo with `ralph resume`."""
    from ralph.commands.pause import pause as pause_ticks

    _finish(ctx, pause_ticks(start=_start(ctx), reason=reason))


@cli.command()
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Start new tasks again after `ralph pause`, and lift a runner's pause after a usage limit."""
    from ralph.commands.pause import resume as resume_ticks

    _finish(ctx, resume_ticks(start=_start(ctx)))


@cli.command()
@click.option("--cron", is_flag=True, help="Resolve commands with cron's bare PATH (/usr/bin:/bin).")
@click.option("--allow-root", is_flag=True, help="Do not fail the check for running as root.")
@_json_option()
@click.pass_context
def doctor(ctx: click.Context, cron: bool, allow_root: bool, as_json: bool) -> None:
    """Check this checkout and machine for what would make unattended ticks fail, and say how to fix it.

    It changes nothing but a throwaway ref, refs/ralph/doctor/<host>, pushed to the remote and deleted
    again to see that claims can be kept there. Exits 1 when a check fails (warnings do not).
    """
    from ralph.commands.doctor import doctor as run_doctor

    _finish(ctx, run_doctor(start=_start(ctx), as_json=as_json, cron=cron, allow_root=allow_root))


def main() -> None:
    # Everything ralph creates (state, logs, run directories, workspaces, a job's HOME) is the owner's
    # alone: a transcript can hold secrets, and a group-writable run directory lets another local user
    # pause ralph or edit a live workspace. Jobs inherit it.
    os.umask(0o077)
    cli.main(prog_name="ralph")
