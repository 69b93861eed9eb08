"""One tick: lock, load, prune, preflight, fetch, read the queue, advance workers, spawn, save, report.

A tick never waits on an agent or a CI run; it starts detached jobs, reads their results on a later
tick, and decides the next step (DESIGN §3). Every step takes the same `now`, read once. The state is
saved after every step that started or finished something outside this process, so a crash between
two steps never forgets a live job or a landed push; `RALPH_CRASHPOINT=<name>` stops the process at
a named step so tests can prove it.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from shutil import rmtree
from typing import Any

from ralph import job as jobs
from ralph import landing, markers, ownership, policy, proc, prompts, replay, runners, sandbox, workspace
from ralph.bookkeeping import Source, detect_source, fetch_base, read_queues, rev
from ralph.checkout import Checkout
from ralph.clock import format_z, scheduled
from ralph.config import Config
from ralph.crash import crashpoint
from ralph.errors import GitError, PreflightError, RalphError, StateError
from ralph.files import copy_truncate, read_tail, rotate, write_atomic
from ralph.git import Git
from ralph.launch import Launcher, expand_agent_env
from ralph.ledger import Ledger, stop_job
from ralph.lock import TickLock
from ralph.meter import enforce_budget, held_back, take_stock, within_budget
from ralph.paths import Paths, is_within
from ralph.pause import read_pause
from ralph.queue import Queues, Task, select_runnable, still_wanted
from ralph.state import Job, JobKind, Lifecycle, State, Worker, load_state, prune_terminal

logger = logging.getLogger(__name__)

CI_LOG_TAIL_BYTES = 256 * 1024
# How long a job may take to make its checkout before its command starts (a clone of a large repository).
PREPARE_ALLOWANCE_S = 600


@dataclass(frozen=True)
class TickOptions:
    workers: int | None = None  # None: parallel.workers from the config
    max_tasks: int = 0  # new starts per tick; 0 = no limit
    dry_run: bool = False
    allow_root: bool = False
    only: str | None = None  # start this task alone, out of queue order
    include_draft: bool = False  # drafts may start too (after the todo tasks)


@dataclass
class Action:
    task_id: str
    action: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"task_id": self.task_id, "action": self.action, "detail": self.detail}


@dataclass
class TickReport:
    started_at: datetime
    dry_run: bool = False
    actions: list[Action] = field(default_factory=list)
    workers: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "started_at": format_z(self.started_at),
            "dry_run": self.dry_run,
            "actions": [a.as_dict() for a in self.actions],
            "workers": self.workers,
        }


@dataclass(frozen=True)
class Waiting:
    """How a tick waits between push attempts; tests pass a fake clock and a seeded generator."""

    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)


@dataclass
class Tick:
    """Everything one tick works with; built once, then passed through the steps."""

    checkout: Checkout
    options: TickOptions
    ledger: Ledger
    git: Git
    base: str
    report: TickReport
    waiting: Waiting = field(default_factory=Waiting)
    source: Source | None = None
    queues: Queues | None = None
    base_sha: str = ""
    started: float = 0.0  # monotonic, for the tick budget
    fetched: float = 0.0  # monotonic, when the base was last fetched
    remote_url: str = ""  # the remote's fetch URL, as preflight found it

    @property
    def now(self) -> datetime:
        return self.ledger.now

    @property
    def state(self) -> State:
        return self.ledger.state

    @property
    def config(self) -> Config:
        return self.checkout.config

    @property
    def paths(self) -> Paths:
        return self.checkout.paths

    @property
    def base_ref(self) -> str:
        return self.checkout.tracking_ref(self.base)

    @cached_property
    def identity(self) -> dict[str, str]:
        """The author and committer of ralph's commits, read when the first commit is made."""
        return self.git.identity()

    @cached_property
    def launcher(self) -> Launcher:
        return Launcher(self.checkout, self.git, self.base, self.remote_url, self.identity)

    def abilities(self) -> runners.Abilities:
        """What the agent can do in the mode its CLI runs in (a prompt asks only for that)."""
        return runners.abilities(self.config.agent, boxed=self.launcher.boxed)

    def act(self, task_id: str, action: str, detail: str) -> None:
        """Report one action: a line on stderr now, an entry in the --json summary later."""
        self.report.actions.append(Action(task_id, action, detail))
        logger.info("%s %s", task_id, detail)

    def save(self) -> None:
        self.ledger.save()

    def elapsed(self) -> float:
        return self.waiting.monotonic() - self.started

    def time_left(self) -> float:
        return self.config.parallel.tick_budget_s - self.elapsed()

    def task(self, task_id: str) -> Task:
        assert self.queues is not None and self.source is not None
        task = self.queues.find(task_id)
        if task is None:
            raise RalphError(f"{task_id} is no longer in the queue on {self.source.label}")
        return task

    def read_base(self) -> None:
        """Read queue and done as the remote base has them now (after a fetch or our own push)."""
        self.source = detect_source(self.checkout, self.git, self.base)
        self.queues = read_queues(self.checkout, self.source)
        self.queues.validate(self.config.queue)

    def fetch(self) -> None:
        sha = fetch_base(self.git, remote=self.checkout.remote, base=self.base)
        self.fetched = self.waiting.monotonic()
        if sha != self.base_sha or self.queues is None:
            # A queue of thousands of tasks is read and validated only when the base moved. Until
            # that read succeeds there are no queues: never the old queue paired with the new sha.
            self.queues = None
            self.base_sha = sha
            self.read_base()

    def refetch_if_stale(self, max_age_s: float = 0.1) -> None:
        """Before a push: someone may have pushed since our last look, and a push built on an old base
        only loses a race. A fetch costs far less than the backoff after one."""
        if self.waiting.monotonic() - self.fetched > max_age_s:
            self.fetch()

    def free_slots(self) -> int:
        """Jobs that may still start: --workers bounds every live job, CI gates and remediations too."""
        limit = self.options.workers or self.config.parallel.workers
        return limit - sum(1 for w in self.state.workers if w.lifecycle in Lifecycle.active())

    # --- workspaces ------------------------------------------------------------------------------

    def remove_workspace(self, worker: Worker, *, landed: bool = False) -> None:
        """Delete a worker's workspace, saving unlanded commits to the attic first; never fatal."""
        path = Path(worker.workspace_path)
        if not path.exists():
            return
        if not is_within(path, self.paths.workspace_root):
            logger.warning("%s: not removing %s: it is outside the workspace root", worker.task_id, path)
            return
        try:
            workspace.remove(
                path,
                task_id=worker.task_id,
                control=self.checkout.root,
                base_ref=self.base_ref,
                save=not landed,
            )
        except (RalphError, OSError) as e:
            logger.warning("%s: could not remove workspace %s: %s", worker.task_id, path, e)

    def stop_and_shelve(self, worker: Worker) -> str | None:
        """Stop the worker's job, if one runs, and save its workspace's commits to the attic; the ref."""
        stop_job(worker, grace_s=self.config.parallel.kill_grace_seconds)
        path = Path(worker.workspace_path)
        if not path.exists():
            return None
        return workspace.save_to_attic(
            path, task_id=worker.task_id, control=self.checkout.root, base_ref=self.base_ref
        )

    def closed_elsewhere(self, worker: Worker) -> bool:
        """A task someone finished, rejected or removed on the base is not worked on any further.

        Its job is stopped, its work kept in the attic, and the record ends failed with the reason;
        it is not retried on its own: the queue no longer wants it.
        """
        assert self.queues is not None and self.source is not None
        task = self.queues.find(worker.task_id)
        if task is not None and still_wanted(task):
            return False
        where = self.source.label
        reason = (
            f"{worker.task_id} is {task.status} on {where}"
            if task
            else f"{worker.task_id} was removed from {where}"
        )
        saved = self.stop_and_shelve(worker)
        self.ledger.fail(worker, f"closed elsewhere: {reason}", retry_after=None)
        kept = f"its work is kept as {saved}" if saved else "it had no unlanded commits"
        self.act(worker.task_id, "closed_elsewhere", f"stopped: {reason}; {kept}")
        self.save()
        return True

    # --- ending an attempt -----------------------------------------------------------------------

    def fail(self, worker: Worker, reason: str) -> None:
        """Give up on this attempt; selection retries after a backoff while attempts are left."""
        wait = scheduled(self.config.agent.retry_backoff_minutes, worker.attempt)
        self.ledger.fail(worker, reason, retry_after=timedelta(minutes=wait))
        left = self.config.agent.max_attempts - worker.attempt
        retry = "; no attempts left"
        if left > 0 and worker.next_attempt_at is not None:
            retry = f"; retry after {format_z(worker.next_attempt_at)}"
        self.act(
            worker.task_id,
            "failed",
            f"failed: {reason} (attempt {worker.attempt}/{self.config.agent.max_attempts}{retry})",
        )

    def block(self, worker: Worker, reason: str) -> None:
        """Verified work that cannot land: keep the workspace, write the marker, wait for a person."""
        worker.last_error = reason
        worker.next_attempt_at = None
        path = Path(worker.workspace_path)
        if path.is_dir():  # with the workspace gone, the reason is in state.json alone
            markers.write_blocked_push(
                path,
                markers.BlockedPush(
                    task_id=worker.task_id,
                    reason=reason,
                    attempt=worker.push_attempts,
                    max_attempts=self.config.parallel.max_push_attempts,
                    generated_at=format_z(self.now),
                ),
            )
        self.ledger.transition(worker, Lifecycle.BLOCKED_PUSH, reason)
        self.act(
            worker.task_id,
            "blocked_push",
            f"blocked: {reason}; `ralph retry {worker.task_id}` or `ralph discard {worker.task_id}`",
        )

    # --- starting jobs ---------------------------------------------------------------------------

    def start_ci(self, worker: Worker, detail: str) -> None:
        """The CI gate on head_sha (a commit in the control repository), in a checkout of its own."""
        assert worker.head_sha is not None
        run_dir = self.paths.run_dir(worker.task_id)
        stem = _job_stem(JobKind.CI, worker, self.now)
        log = run_dir / "ci.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")  # ci.log holds the latest run only: it is what the CI marker quotes
        self.remove_gate_checkout(worker.task_id)
        spec = self.launcher.gate(
            task_id=worker.task_id,
            commit=worker.head_sha,
            base_sha=worker.base_sha or self.base_sha,
            stem=stem,
            now=self.now,
        )
        self._launch(worker, spec, run_dir / f"{stem}.spec.json", Lifecycle.CHECKING, detail, new=False)

    def remove_gate_checkout(self, task_id: str) -> None:
        gate = self.launcher.gate_dir(task_id)
        if gate.is_symlink():
            gate.unlink()
        elif gate.exists():
            workspace.force_rmtree(gate)

    def start_agent(
        self,
        worker: Worker,
        prompt: str,
        *,
        lifecycle: Lifecycle,
        detail: str,
        new: bool = False,
        checkout_at: str | None = None,
    ) -> None:
        """An agent job in the worker's workspace; with `checkout_at` the job first makes the workspace
        anew at that commit (whatever was there is saved to the attic and removed here)."""
        if held_back(self, worker, detail):
            return
        run_dir = self.paths.run_dir(worker.task_id)
        stem = _job_stem(JobKind.AGENT, worker, self.now)
        prompt_path = run_dir / ("prompt.md" if lifecycle is Lifecycle.RUNNING else f"{stem}.prompt.md")
        prompt_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(prompt_path, prompt.encode())
        ws = Path(worker.workspace_path)
        if checkout_at is not None:
            workspace.remove(ws, task_id=worker.task_id, control=self.checkout.root, base_ref=self.base_ref)
        spec = self.launcher.agent(
            task_id=worker.task_id,
            ws=ws,
            prompt_path=prompt_path,
            stem=stem,
            now=self.now,
            checkout_at=None if checkout_at is None else (checkout_at, worker.base_sha or self.base_sha),
        )
        self._launch(worker, spec, run_dir / f"{stem}.spec.json", lifecycle, detail, new=new)

    def _launch(
        self,
        worker: Worker,
        spec: jobs.JobSpec,
        spec_path: Path,
        lifecycle: Lifecycle,
        detail: str,
        *,
        new: bool,
    ) -> None:
        """Start a job, record it, save, and only then let it run (the two-phase start in ralph.job)."""
        rotate(Path(spec.log_path), self.config.parallel.log_max_bytes)
        started = jobs.start(spec, spec_path)
        # The job's set-up (its checkout, after_create) comes before the command's own timeout.
        setup_s = (PREPARE_ALLOWANCE_S if spec.prepare else 0) + (
            spec.setup_timeout_s if spec.after_create else 0
        )
        worker.job = Job(
            kind=JobKind(spec.kind),
            pid=started.identity.pid,
            pid_start_ticks=started.identity.start_ticks,
            boot_id=started.identity.boot_id,
            started_at=self.now,
            deadline=self.now + timedelta(seconds=spec.timeout_s + setup_s),
            log_path=spec.log_path,
            result_path=spec.result_path,
        )
        worker.completed_at = None
        self.ledger.transition(worker, lifecycle, detail, new=new, pid=started.identity.pid, kind=spec.kind)
        crashpoint("after-spawn-before-save")
        try:
            self.save()
        except BaseException:
            started.abandon()
            raise
        if not started.confirm():
            logger.warning(
                "%s: the %s job exited before it was told to run; the next tick will call it lost",
                worker.task_id,
                spec.kind,
            )
        self.act(
            worker.task_id,
            f"started_{spec.kind}",
            f"{detail}: started {spec.kind} (pid {started.identity.pid})",
        )


def run_tick(
    checkout: Checkout, options: TickOptions, now: datetime, waiting: Waiting | None = None
) -> TickReport:
    """One tick. Raises LockBusy when another tick runs, PreflightError when nothing may start."""
    if options.dry_run:
        return _dry_run(checkout, options, now)
    waiting = waiting or Waiting()
    git = checkout.git()
    base = checkout.base_branch()
    with TickLock(checkout.paths.lock, now=now):
        rotate(checkout.paths.events, checkout.config.parallel.log_max_bytes)
        ledger = Ledger.load(
            checkout.paths, now=now, target_branch=base, remote=checkout.remote, hooks=checkout.config.hooks
        )
        tick = Tick(
            checkout,
            options,
            ledger,
            git,
            base,
            TickReport(started_at=now),
            waiting,
            started=waiting.monotonic(),
        )
        crashpoint("after-load")
        loaded = _content(tick.state)
        _retarget(tick)
        _prune(tick)
        _preflight(tick)
        tick.fetch()
        enforce_budget(tick)
        _advance(tick)
        _spawn(tick)
        # A tick that changed nothing writes nothing (cron runs many of those), except the first,
        # so that status can tell a tick ran.
        if ledger.on_disk is None or _content(tick.state) != loaded:
            tick.save()
        crashpoint("after-save")
    tick.report.workers = tick.state.lifecycle_counts()
    return tick.report


# --- steps ------------------------------------------------------------------------------------------


def _retarget(tick: Tick) -> None:
    if tick.state.target_branch == tick.base and tick.state.remote == tick.checkout.remote:
        return
    busy = [w.task_id for w in tick.state.workers if w.lifecycle not in Lifecycle.terminal()]
    if busy:
        raise StateError(
            f"state.json belongs to {tick.state.remote}/{tick.state.target_branch} but the config says "
            f"{tick.checkout.remote}/{tick.base}, and {', '.join(busy)} are in flight; set git.base_branch "
            "back until they finish, or `ralph cancel` them first"
        )
    logger.info(
        "retargeting from %s/%s to %s/%s",
        tick.state.remote,
        tick.state.target_branch,
        tick.checkout.remote,
        tick.base,
    )
    tick.state.target_branch = tick.base
    tick.state.remote = tick.checkout.remote


def _prune(tick: Tick) -> None:
    """Drop old finished records and the workspaces they kept (after saving any unlanded commits)."""
    pruned = prune_terminal(
        tick.state, now=tick.now, ttl_hours=tick.config.parallel.terminal_worker_ttl_hours
    )
    retention = timedelta(hours=tick.config.parallel.workspace_retention_hours)
    expired = [
        w
        for w in tick.state.workers
        if w.lifecycle in (Lifecycle.COMPLETED, Lifecycle.FAILED)
        and w.completed_at is not None
        and tick.now - w.completed_at >= retention
        and Path(w.workspace_path).exists()
    ]
    for n, worker in enumerate([*pruned, *expired]):
        if n == 1:
            crashpoint("mid-prune")
        tick.remove_workspace(worker)
    for worker in pruned:
        rmtree(tick.paths.run_dir(worker.task_id), ignore_errors=True)
        logger.debug("%s: pruned its %s record", worker.task_id, worker.lifecycle)
    if pruned or expired:
        tick.save()


def _preflight(tick: Tick) -> None:
    """Fail before anything is started (DESIGN §3.4)."""
    if os.geteuid() == 0 and not tick.options.allow_root:
        raise PreflightError(
            "running as root: agents would run as root too; run ralph as a dedicated user "
            "(or pass --allow-root inside a throwaway sandbox)"
        )
    ownership.check(tick.paths)  # set up by `ralph init`; no Rust ralph coordinator at work here
    remote = tick.checkout.remote
    try:
        tick.remote_url = tick.git.run("remote", "get-url", remote).out
    except GitError:
        raise PreflightError(
            f"no remote {remote!r} in {tick.checkout.root}: add it with `git remote add {remote} <url>` "
            "(or set git.remote)"
        ) from None
    check_workspace_root(tick.git, tick.paths)
    runners.resolve_agent(tick.config.agent, tick.checkout.root)
    runners.resolve_ci(tick.config.ci.command, tick.checkout.root)
    expand_agent_env(tick.config.agent.env, os.environ)
    check_identity(tick.git)
    check_sandbox(tick.config)


def check_identity(git: Git) -> None:
    """ralph's commits use the control checkout's identity (its own config included): it must exist."""
    for role in ("AUTHOR", "COMMITTER"):
        result = git.run("var", f"GIT_{role}_IDENT", ok=(0, 128))
        if result.returncode != 0:
            said = (result.stderr.strip().splitlines() or ["no identity"])[-1]
            raise PreflightError(
                f"git has no {role.lower()} identity for ralph's commits in {git.cwd} ({said}): set one with "
                '`git config user.name "..."` and `git config user.email ...` there (or --global), '
                "or GIT_AUTHOR_NAME/GIT_AUTHOR_EMAIL and GIT_COMMITTER_NAME/GIT_COMMITTER_EMAIL"
            )


def check_sandbox(config: Config) -> None:
    """With sandbox.mode = "bwrap" (the default) a tick never runs a job unboxed: no box, no tick."""
    if config.sandbox.mode != "bwrap":
        return
    found = sandbox.probe()
    if not found.ok:
        raise PreflightError(
            f"sandbox: {found.problem}. Every job runs in a bubblewrap box; to run jobs as ralph itself "
            'instead (unsafe: README "Security model"), set sandbox.mode = "none" in .ralph/config.toml'
        )


def check_workspace_root(git: Git, paths: Paths) -> None:
    """The workspace root, when inside the repository, must be ignored and must not be the root itself."""
    root = paths.root.resolve()
    ws_root = paths.workspace_root.resolve()
    if root.is_relative_to(ws_root):
        raise PreflightError(
            f"parallel.workspace_root {ws_root} is the repository or contains it; "
            "use a directory of its own, outside the repository or in an ignored subdirectory such as "
            ".ralph/workspaces"
        )
    try:
        rel = ws_root.relative_to(root).as_posix()
    except ValueError:
        return  # outside the repository: nothing to ignore
    fixes = (
        f"move parallel.workspace_root outside the repository, or add `{rel}/` to .gitignore "
        "(or .git/info/exclude)"
    )
    try:
        ignored = git.is_ignored(rel, f"{rel}/__ralph_ignore_probe__")
    except GitError as e:
        raise PreflightError(f"cannot tell whether {rel} is gitignored ({e}); {fixes}") from None
    if not ignored:
        raise PreflightError(
            f"parallel.workspace_root {rel} is inside the repository but not gitignored, so workspaces "
            f"could be committed; {fixes}"
        )


# --- advance ----------------------------------------------------------------------------------------


def _in_queue_order(tick: Tick, workers: Iterable[Worker]) -> list[Worker]:
    assert tick.queues is not None
    order = {t.id: n for n, t in enumerate(tick.queues.queue.tasks)}
    return sorted(workers, key=lambda w: (order.get(w.task_id, len(order)), w.started_at))


def _advance(tick: Tick) -> None:
    in_flight = [w for w in tick.state.workers if w.lifecycle not in Lifecycle.terminal()]
    for worker in _in_queue_order(tick, in_flight):
        try:
            _advance_worker(tick, worker)
        except RalphError as e:
            # One task's trouble must not stop the others.
            tick.fail(worker, str(e))
            tick.save()


def _advance_worker(tick: Tick, worker: Worker) -> None:
    if worker.lifecycle is not Lifecycle.INTEGRATING and tick.closed_elsewhere(worker):
        return
    if worker.lifecycle in Lifecycle.active():
        assert worker.job is not None
        job = worker.job
        identity = job.identity
        grace = tick.config.parallel.kill_grace_seconds
        outcome, result = jobs.check(
            identity, Path(job.result_path), deadline=job.deadline, grace_s=grace, now=tick.now
        )
        if outcome is jobs.Outcome.RUNNING:
            copy_truncate(Path(job.log_path), tick.config.parallel.log_max_bytes)
            return
        if outcome is jobs.Outcome.OVERDUE:
            if proc.kill_group(identity, grace_s=grace):
                tick.fail(worker, f"{job.kind} job timed out (it outlived its deadline and was killed)")
                tick.save()
            else:
                logger.error(
                    "%s: %s job pid %s is past its deadline and would not die",
                    worker.task_id,
                    job.kind,
                    job.pid,
                )
            return
        if outcome is jobs.Outcome.LOST:
            # The wrapper died, but the command it ran may live on in its group: stop it before a
            # retry resets the workspace under it. Nothing is signalled if the pid is someone else's.
            if not proc.kill_group(identity, grace_s=grace):
                logger.error(
                    "%s: %s job pid %s died, but its process group would not; trying again next tick",
                    worker.task_id,
                    job.kind,
                    job.pid,
                )
                return
            tick.fail(
                worker,
                f"{job.kind} job lost (pid {job.pid} died without a result: killed, or the host rebooted)",
            )
            tick.save()
            return
        assert result is not None
        if job.kind is JobKind.AGENT:
            _agent_finished(tick, worker, result)
        else:
            _ci_finished(tick, worker, result)
        tick.save()
    if worker.lifecycle is Lifecycle.INTEGRATING:
        landing.land(tick, worker)


def _agent_finished(tick: Tick, worker: Worker, result: jobs.JobResult) -> None:
    what = "agent" if worker.lifecycle is Lifecycle.RUNNING else "remediation agent"
    if not result.error and take_stock(tick, worker, result, what):
        return
    if result.error:
        tick.fail(worker, f"{what} could not start: {result.error}")
        return
    if result.timed_out:
        tick.fail(worker, f"{what} timed out after {tick.config.agent.timeout_minutes:g} min")
        return
    if not result.succeeded:
        tick.fail(
            worker,
            f"{what} failed ({result.describe()}); see {worker.job.log_path if worker.job else 'its log'}",
        )
        return
    path = Path(worker.workspace_path)
    if not workspace.is_valid(path):
        tick.fail(worker, f"workspace {path} is missing or broken")
        return
    task = tick.task(worker.task_id)
    head = workspace.commit_leftovers(path, message=prompts.commit_message(task), identity=tick.identity)
    crashpoint("after-reap-before-save")
    previous = worker.base_sha if worker.lifecycle is Lifecycle.RUNNING else worker.head_sha
    if head == previous:
        tick.fail(worker, f"{what} produced no changes")
        return
    # From here on the work is judged in ralph's own repository, never in the agent's clone.
    workspace.import_commit(tick.git, path, task_id=worker.task_id, rev=head)
    assert worker.base_sha is not None
    if worker.conflicts:
        left = replay.markers_left(tick.git, head, tuple(worker.conflicts))
        if left:
            tick.fail(worker, f"conflict markers are left in {', '.join(left)} after the remediation")
            return
        # The commit with the markers must never land: the resolution is one commit on the base.
        head = replay.squash(tick.git, base=worker.base_sha, head=head, message=prompts.commit_message(task))
        worker.conflicts = []
    assert tick.source is not None
    problems = policy.problems(
        tick.git,
        base=worker.base_sha,
        head=head,
        config=tick.config,
        queue_paths=(tick.source.queue_path, tick.source.done_path),
    )
    worker.head_sha = head
    if problems:
        tick.block(worker, f"{head[:10]} may not land: " + "; ".join(problems))
        return
    if tick.config.ci.command:
        tick.start_ci(worker, f"committed {head[:10]}; CI gate")
    else:
        worker.verified_sha = head
        tick.ledger.transition(worker, Lifecycle.INTEGRATING, "no CI gate configured", head=head)
        tick.act(worker.task_id, "verified", f"committed {head[:10]}; no CI gate, landing")


def _ci_finished(tick: Tick, worker: Worker, result: jobs.JobResult) -> None:
    path = Path(worker.workspace_path)
    assert worker.job is not None
    tick.remove_gate_checkout(worker.task_id)
    if result.error:
        # The gate never judged the work (its checkout or after_create failed, the program is missing).
        tick.fail(worker, f"the CI gate could not run: {result.error}")
        return
    if result.succeeded:
        worker.verified_sha = worker.head_sha
        markers.clear_ci_failure(path)
        tick.ledger.transition(worker, Lifecycle.INTEGRATING, "CI passed", head=worker.head_sha)
        tick.act(worker.task_id, "ci_passed", f"CI passed on {str(worker.head_sha)[:10]}; landing")
        return
    output = _read_log_tail(Path(worker.job.log_path))
    marker = markers.CiFailure(
        task_id=worker.task_id,
        command=list(tick.config.ci.command),
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        output_tail=prompts.tail(output),
        log_path=worker.job.log_path,
        generated_at=format_z(tick.now),
    )
    if path.is_dir():
        markers.write_ci_failure(path, marker)
    limit = tick.config.agent.max_remediations
    if worker.remediations >= limit:
        tick.fail(worker, f"CI failed ({result.describe()}) and {limit} remediations are used up")
        return
    if not workspace.is_valid(path):
        tick.fail(worker, f"CI failed ({result.describe()}), and workspace {path} is missing or broken")
        return
    worker.remediations += 1
    task = tick.task(worker.task_id)
    prompt = prompts.ci_remediation_prompt(
        task,
        workspace=str(path),
        base_branch=tick.base,
        ci_command=tick.config.ci.command,
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        output_tail=marker.output_tail,
        remediation=worker.remediations,
        max_remediations=limit,
        can=tick.abilities(),
    )
    tick.start_agent(
        worker,
        prompt,
        lifecycle=Lifecycle.REMEDIATING,
        detail=f"CI failed ({result.describe()}); remediation {worker.remediations}/{limit}",
    )


def _read_log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return read_tail(f, CI_LOG_TAIL_BYTES)
    except OSError:
        return ""


def _job_stem(kind: JobKind, worker: Worker, now: datetime) -> str:
    return f"{kind}-a{worker.attempt}-r{worker.remediations}-{now.strftime('%Y%m%dT%H%M%S%fZ')}"


# --- select and spawn -------------------------------------------------------------------------------


def _runnable(tick: Tick) -> list[Task]:
    assert tick.queues is not None
    return select_runnable(
        tick.queues.queue,
        tick.queues.done,
        tick.state.by_task(),
        tick.now,
        max_attempts=tick.config.agent.max_attempts,
        include_draft=tick.options.include_draft,
        only=tick.options.only,
    )


def _spawn(tick: Tick) -> None:
    if tick.queues is None:
        # A landing found the base's queue unreadable after this tick's first read: nothing new
        # starts from a queue nobody can read (the landing said why, and waits).
        logger.warning(
            "not starting new tasks: the queue on %s/%s cannot be read", tick.checkout.remote, tick.base
        )
        return
    for task in _to_start(tick):
        _start_task(tick, task)


def _to_start(tick: Tick) -> list[Task]:
    """Runnable tasks in queue order, as many as free slots and --max-tasks allow; none while paused."""
    paused = read_pause(tick.paths.pause)
    if paused is not None:
        if _runnable(tick):
            logger.info("not starting new tasks: %s; `ralph resume` to go on", paused.describe())
        return []
    held = tick.state.runner_pause(tick.config.agent.runner, tick.now)
    if held is not None:
        if _runnable(tick):
            logger.info("not starting new tasks: %s; `ralph resume` to go on now", held.describe(tick.now))
        return []
    limit = tick.free_slots()
    if tick.options.max_tasks:
        limit = min(limit, tick.options.max_tasks)
    runnable = [t for t in _runnable(tick) if within_budget(tick, tick.state.worker(t.id))]
    return runnable[: max(0, limit)]


def _start_task(tick: Tick, task: Task) -> None:
    worker = tick.state.worker(task.id)
    path = tick.paths.workspace(task.id)
    new = worker is None
    if worker is None:
        worker = Worker(
            task_id=task.id,
            lifecycle=Lifecycle.FAILED,  # becomes running once its job is recorded
            attempt=1,
            workspace_path=str(path),
            started_at=tick.now,
            updated_at=tick.now,
            completed_at=tick.now,
        )
        tick.state.workers.append(worker)
    else:
        # A retry reuses the record: one record per task, with its attempt count.
        worker.attempt += 1
        worker.workspace_path = str(path)
        worker.started_at = tick.now
        worker.remediations = 0
        worker.push_attempts = 0
        worker.head_sha = worker.verified_sha = worker.landed_sha = None
        worker.next_attempt_at = None
        worker.last_error = None
    worker.base_sha = tick.base_sha
    try:
        prompt = prompts.task_prompt(
            task,
            workspace=str(path),
            base_branch=tick.base,
            ci_command=tick.config.ci.command,
            can=tick.abilities(),
        )
        detail = f"attempt {worker.attempt}/{tick.config.agent.max_attempts} on {tick.base_sha[:10]}"
        tick.start_agent(
            worker, prompt, lifecycle=Lifecycle.RUNNING, detail=detail, new=new, checkout_at=tick.base_sha
        )
    except (RalphError, OSError) as e:
        worker.job = None
        tick.fail(worker, f"could not start: {e}")
        tick.save()


def _content(state: State) -> dict[str, Any]:
    """The state as saved, but for its own timestamp."""
    return state.model_dump(exclude={"updated_at"})


# --- dry run ----------------------------------------------------------------------------------------


def _dry_run(checkout: Checkout, options: TickOptions, now: datetime) -> TickReport:
    """What would start, from what is on disk now: no lock, no fetch, no write."""
    git = checkout.git()
    base = checkout.base_branch()
    state = load_state(checkout.paths.state, now=now, target_branch=base, remote=checkout.remote)
    tick = Tick(
        checkout,
        options,
        Ledger(state, checkout.paths, now),
        git,
        base,
        TickReport(started_at=now, dry_run=True),
    )
    check_workspace_root(git, checkout.paths)
    runners.resolve_agent(checkout.config.agent, checkout.root)
    tick.base_sha = rev(git, tick.base_ref)
    tick.read_base()
    to_start = _to_start(tick)
    for task in to_start:
        tick.act(task.id, "would_start", f"would start: {task.title}")
    if not to_start and read_pause(tick.paths.pause) is None:
        if not _runnable(tick):
            logger.info("nothing to start: no runnable task (`ralph queue explain` says why)")
        else:
            logger.info(
                "nothing to start: all %d worker slots are busy",
                options.workers or checkout.config.parallel.workers,
            )
    tick.report.workers = state.lifecycle_counts()
    return tick.report
