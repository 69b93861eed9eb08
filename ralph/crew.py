"""What one tick works with, and the effects it has: start and stop jobs, end an attempt, block, report.

A `Crew` is built once per tick (ralph.tick) and passed through its steps. It is also what the merge
train (ralph.train.Effects) asks to start a gate, stop one, or hand a task to a remediation agent.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from ralph import job as jobs
from ralph import markers, prompts, runners, workspace
from ralph.bookkeeping import RemoteUnreachable, Source, detect_source, fetch_base, rev
from ralph.checkout import Checkout
from ralph.claims import Board, Claims
from ralph.clock import format_z, scheduled
from ralph.config import Config
from ralph.crash import crashpoint
from ralph.errors import RalphError
from ralph.files import force_rmtree, read_tail, rotate, write_atomic
from ralph.git import Git
from ralph.launch import GATES_DIR, Launcher
from ralph.ledger import Ledger, stop_job
from ralph.paths import Paths, is_within
from ralph.queue import Task, still_wanted
from ralph.queuecache import read_base_queues
from ralph.queues import Queues
from ralph.replay import Replayed
from ralph.state import Job, JobKind, Lifecycle, Position, State, Worker
from ralph.usage import over_budget

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
    include_draft: bool = False  # drafts may start too


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


def job_stem(kind: JobKind, worker: Worker, now: datetime) -> str:
    return f"{kind}-a{worker.attempt}-r{worker.remediations}-{now.strftime('%Y%m%dT%H%M%S%fZ')}"


def read_log_tail(path: Path, limit: int = CI_LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            return read_tail(f, limit)
    except OSError:
        return ""


@dataclass
class Sharing:
    """What one pass knows of the claims and shared facts on the remote (ralph.hosts; ralph.claims)."""

    claims: Claims
    board: Board | None = None  # read on first use, once per pass
    error: str | None = None  # why no claim can be made this pass (multi mode: nothing starts)
    refused: bool = False  # the remote refused a claim: the tick fails, saying `error`
    said: set[str] = field(default_factory=set)  # tasks whose refusal was logged this pass
    lost: set[str] = field(default_factory=set)  # claims lost this pass: the board is out of date on them
    base_checked: bool = False  # the base was asked for after the board was read (ralph.hosts)


@dataclass
class Crew:
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
    offline: str | None = None  # why the remote could not be reached this tick
    sharing: Sharing | None = None  # claims and shared facts; None offline and in a dry run

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

    def message(self, worker: Worker) -> str:
        return prompts.commit_message(self.task(worker.task_id))

    # --- the base ----------------------------------------------------------------------------------

    def read_base(self) -> None:
        """Read queue and done as the remote base has them now (after a fetch or our own push)."""
        self.source = detect_source(self.checkout, self.git, self.base, at=self.base_sha)
        # Validated; kept by the files' blob ids, so an unchanged queue is not parsed again. A dry run
        # writes nothing, not even that.
        self.queues = read_base_queues(self.checkout, self.source, write=not self.options.dry_run)

    def fetch(self) -> None:
        sha = fetch_base(self.git, remote=self.checkout.remote, base=self.base)
        self.fetched = self.waiting.monotonic()
        self._follow_base(sha)

    def fetch_or_go_offline(self) -> None:
        """The tick's first fetch. An unreachable remote does not stop the tick: it works from the base
        as last fetched (jobs are reaped, gated, remediated) and lands nothing until the remote answers."""
        try:
            self.fetch()
        except RemoteUnreachable as e:
            try:
                sha = rev(self.git, self.base_ref)
            except RalphError:
                raise e from None  # never fetched: there is no base to work from
            self.offline = str(e)
            logger.warning("%s; working from %s as last fetched (%s), not landing", e, self.base, sha[:10])
            self._follow_base(sha)

    def _follow_base(self, sha: str) -> None:
        if sha != self.base_sha or self.queues is None:
            # A queue of thousands of tasks is read and validated only when the base moved. Until
            # that read succeeds there are no queues: never the old queue paired with the new sha.
            self.queues = None
            self.base_sha = sha
            self.read_base()

    def refetch_if_stale(self, max_age_s: float = 0.1) -> None:
        """Before a push: someone may have pushed since our last look, and a push built on an old base
        only loses a race. A fetch costs far less than the backoff after one."""
        if self.offline is None and self.waiting.monotonic() - self.fetched > max_age_s:
            self.fetch()

    # --- slots -------------------------------------------------------------------------------------

    def agent_slots(self) -> int:
        """Agent and remediation jobs that may still start: --workers bounds them."""
        limit = self.options.workers or self.config.parallel.workers
        return limit - sum(1 for w in self.state.workers if w.lifecycle in Lifecycle.agents())

    def can_remediate(self, worker: Worker) -> bool:
        return worker.remediations >= self.config.agent.max_remediations or self.agent_slots() > 0

    def gate_slots(self) -> int:
        """Gate jobs that may still start: ci.max_parallel bounds them (--workers when unset), the gate on
        main (ralph.watch) included."""
        limit = self.config.ci.max_parallel or self.options.workers or self.config.parallel.workers
        running = sum(1 for w in self.state.workers if w.lifecycle is Lifecycle.CHECKING)
        return limit - running - (self.state.watch.job is not None)

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
        status = self.queues.status(worker.task_id)  # from the index: no parse of the whole queue
        if still_wanted(status):
            return False
        where = self.source.label
        reason = (
            f"{worker.task_id} is {status} on {where}"
            if status is not None
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
        """Work that may not or cannot land: keep the workspace, write the marker, wait for a person."""
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
        if self.sharing is not None:  # shared: no host starts the task again until retry or discard
            recorded = self.sharing.claims.record_block(worker.task_id, self.now, reason)
            if not recorded.ok:
                said = recorded.message
                logger.warning("%s: its block is known on this host only: %s", worker.task_id, said)
        self.act(
            worker.task_id,
            "blocked_push",
            f"blocked: {reason}; `ralph retry {worker.task_id}` or `ralph discard {worker.task_id}`",
        )

    # --- gates (ralph.train.Effects) ------------------------------------------------------------------

    def start_gate(self, worker: Worker, commit: str, detail: str) -> None:
        """The CI gate on `commit` (the worker's train position), in a checkout of its own."""
        run_dir = self.paths.run_dir(worker.task_id)
        stem = job_stem(JobKind.CI, worker, self.now)
        log = run_dir / "ci.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")  # ci.log holds the latest run only: it is what the CI marker quotes
        self.remove_gate_checkout(worker.task_id)
        spec = self.launcher.gate(
            task_id=worker.task_id, commit=commit, base_sha=self.base_sha, stem=stem, now=self.now
        )
        self._launch(
            worker, spec, run_dir / f"{stem}.spec.json", Lifecycle.CHECKING, detail, new=False, commit=commit
        )

    def stop_gate(self, worker: Worker, why: str) -> None:
        stop_job(worker, grace_s=self.config.parallel.kill_grace_seconds)
        self.remove_gate_checkout(worker.task_id)
        self.ledger.transition(worker, Lifecycle.INTEGRATING, f"gate stopped: {why}")
        logger.info("%s: gate stopped: %s", worker.task_id, why)

    def remove_gate_checkout(self, task_id: str) -> None:
        gate = self.paths.workspace_root / GATES_DIR / task_id
        if gate.is_symlink():
            gate.unlink()
        elif gate.exists():
            force_rmtree(gate)

    # --- remediations (ralph.train.Effects) ------------------------------------------------------------

    def blamed(self, worker: Worker, position: Position) -> None:
        """Its position failed the gate with every position ahead passed: a CI remediation agent works on
        exactly that position (a fresh workspace at its commit), or the attempt ends."""
        limit = self.config.agent.max_remediations
        how = "timed out" if position.failed_timed_out else f"exit {position.failed_exit}"
        if worker.remediations >= limit:
            self.fail(
                worker, f"CI failed ({how}) at its train position, and {limit} remediations are used up"
            )
            return
        log = self.paths.run_dir(worker.task_id) / "ci.log"
        marker = markers.CiFailure(
            task_id=worker.task_id,
            command=list(self.config.ci.command),
            exit_code=position.failed_exit,
            timed_out=position.failed_timed_out,
            output_tail=prompts.tail(read_log_tail(log)),
            log_path=str(log),
            generated_at=format_z(self.now),
        )
        self._next_remediation(worker, base=position.onto, head=position.commit)
        prompt = prompts.ci_remediation_prompt(
            self.task(worker.task_id),
            workspace=worker.workspace_path,
            base_branch=self.base,
            ci_command=self.config.ci.command,
            exit_code=position.failed_exit,
            timed_out=position.failed_timed_out,
            output_tail=marker.output_tail,
            remediation=worker.remediations,
            max_remediations=limit,
            can=self.abilities(),
        )
        self.start_agent(
            worker,
            prompt,
            lifecycle=Lifecycle.REMEDIATING,
            detail=f"CI failed ({how}) at its train position; remediation {worker.remediations}/{limit}",
            checkout_at=position.commit,
            files={markers.CI_FAILURE: markers.render(marker)},
        )

    def conflicted(self, worker: Worker, replayed: Replayed, onto: str) -> None:
        """Its change conflicts with the base: a remediation agent gets a fresh workspace holding the
        conflicted files with their markers, or the work is blocked for a person."""
        limit = self.config.agent.max_remediations
        listed = ", ".join(replayed.conflicts)
        if worker.remediations >= limit:
            where = self.source.label if self.source else self.base
            self.block(
                worker, f"replaying onto {where} conflicts in {listed}, and {limit} remediations are used up"
            )
            return
        # The head's tree holds the markers: it never lands as it is.
        self._next_remediation(worker, base=onto, head=replayed.commit)
        worker.conflicts = list(replayed.conflicts)
        prompt = prompts.conflict_remediation_prompt(
            self.task(worker.task_id),
            workspace=worker.workspace_path,
            base_branch=self.base,
            ci_command=self.config.ci.command,
            conflicting_paths=replayed.conflicts,
            remediation=worker.remediations,
            max_remediations=limit,
            can=self.abilities(),
        )
        self.start_agent(
            worker,
            prompt,
            lifecycle=Lifecycle.REMEDIATING,
            detail=f"merge conflict in {listed}; remediation {worker.remediations}/{limit}",
            checkout_at=replayed.commit,
        )

    @staticmethod
    def _next_remediation(worker: Worker, *, base: str, head: str) -> None:
        """A remediation agent works on `base..head`; nothing of it is verified until its gate says so."""
        worker.remediations += 1
        worker.base_sha = base
        worker.head_sha = head
        worker.verified_sha = None

    # --- agents ------------------------------------------------------------------------------------

    def held_back(self, worker: Worker, detail: str) -> bool:
        """Whether an agent must not start for `worker` now (a remediation: a new attempt is never
        selected then); if so the worker is failed, saying why."""
        over = over_budget(worker.usage, self.config.agent.max_cost_usd_per_task)
        if over is not None:
            # agent.max_cost_usd_per_task: no new attempt or remediation for a task that spent it.
            worker.conflicts = []
            self.ledger.fail(worker, f"not started again: {over}", retry_after=None)
            self.act(worker.task_id, "over_budget", f"{detail}: not started: {over}")
            return True
        held = self.state.runner_pause(self.config.agent.runner, self.now)
        if held is not None:
            # The runner hit a limit since this task's run: it waits with the others, starting again
            # from scratch after the pause, as when its own run stops at the limit.
            worker.attempt = max(0, worker.attempt - 1)
            worker.conflicts = []
            worker.next_attempt_at = self.now
            worker.last_error = f"not started: {held.describe(self.now)}"
            said = f"{detail}: not started (not counted as an attempt): {held.describe(self.now)}"
            self.ledger.transition(worker, Lifecycle.FAILED, said, announce=False)
            self.act(worker.task_id, "runner_paused", f"{said}; the task starts again from scratch after it")
            return True
        return False

    def start_agent(
        self,
        worker: Worker,
        prompt: str,
        *,
        lifecycle: Lifecycle,
        detail: str,
        new: bool = False,
        checkout_at: str | None = None,
        files: dict[str, bytes] | None = None,
    ) -> None:
        """An agent job in the worker's workspace; with `checkout_at` the job first makes the workspace
        anew at that commit (whatever was there is saved to the attic and removed here), with `files`
        written into it (a CI-failure marker)."""
        if self.held_back(worker, detail):
            return
        run_dir = self.paths.run_dir(worker.task_id)
        stem = job_stem(JobKind.AGENT, worker, self.now)
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
            checkout_at=None if checkout_at is None else (checkout_at, self.base_sha),
            files=files,
        )
        self._launch(worker, spec, run_dir / f"{stem}.spec.json", lifecycle, detail, new=new)

    def job_record(self, spec: jobs.JobSpec, started: jobs.StartedJob, *, commit: str | None) -> Job:
        """What state.json keeps of a job just started: who it is, and when it must be done."""
        # The job's set-up (its checkout, after_create) comes before the command's own timeout.
        setup_s = (PREPARE_ALLOWANCE_S if spec.prepare else 0) + (
            spec.setup_timeout_s if spec.after_create else 0
        )
        return Job(
            kind=JobKind(spec.kind),
            pid=started.identity.pid,
            pid_start_ticks=started.identity.start_ticks,
            boot_id=started.identity.boot_id,
            started_at=self.now,
            deadline=self.now + timedelta(seconds=spec.timeout_s + setup_s),
            log_path=spec.log_path,
            result_path=spec.result_path,
            commit=commit,
        )

    def _launch(
        self,
        worker: Worker,
        spec: jobs.JobSpec,
        spec_path: Path,
        lifecycle: Lifecycle,
        detail: str,
        *,
        new: bool,
        commit: str | None = None,
    ) -> None:
        """Start a job, record it, save, and only then let it run (the two-phase start in ralph.job)."""
        rotate(Path(spec.log_path), self.config.parallel.log_max_bytes)
        started = jobs.start(spec, spec_path)
        worker.job = self.job_record(spec, started, commit=commit)
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
