"""One tick: lock, repair, load, prune, preflight, fetch, reap jobs, run the merge train, land, spawn.

A tick never waits on an agent or a CI run; it starts detached jobs, reads their results on a later
tick, and decides the next step (DESIGN §3). Every step takes the same `now`, read once. The state is
saved after every step that started or finished something outside this process, so a crash between
two steps never forgets a live job or a landed push; `RALPH_CRASHPOINT=<name>` stops the process at
a named step so tests can prove it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from shutil import rmtree
from typing import Any

from ralph import health, hosts, landing, markers, prompts, repair, rewinds, runners, stamp, wake, watch
from ralph.bookkeeping import Mode, RemoteUnreachable, rev
from ralph.checkout import Checkout
from ralph.clock import now as clock_now
from ralph.crash import crashpoint
from ralph.crew import Crew, TickOptions, TickReport, Waiting
from ralph.errors import RalphError, StateError, resource_error
from ralph.files import rotate
from ralph.followups import FollowupError
from ralph.git import PushStatus
from ralph.launch import GATES_DIR
from ralph.ledger import Ledger
from ralph.lock import TickLock
from ralph.meter import enforce_budget, within_budget
from ralph.pause import read_pause
from ralph.preflight import check_workspace_root, preflight
from ralph.queue import Task
from ralph.queuecache import keep_landed
from ralph.reaping import reap
from ralph.state import Lifecycle, State, Worker, load_state, prune_terminal
from ralph.train import Conductor, Rules

__all__ = ["TickOptions", "TickReport", "Waiting", "check_workspace_root", "run_tick"]

logger = logging.getLogger(__name__)


# Extra passes a tick makes for jobs that ended while it ran (ralph.wake), within its budget.
MAX_FOLLOW_PASSES = 3


def run_tick(
    checkout: Checkout, options: TickOptions, now: datetime, waiting: Waiting | None = None
) -> TickReport:
    """One tick. Raises LockBusy when another tick runs, PreflightError when nothing may start.

    A job that ended while it ran asked for a tick and found the lock held: once the pass is done and
    the lock released, the tick sees the request and makes another pass (a request made before the
    lock was released is never lost: the tick that held it looks after releasing it).
    """
    if options.dry_run:
        return _dry_run(checkout, options, now)
    waiting = waiting or Waiting()
    began = waiting.monotonic()
    report = None
    for n in range(1 + MAX_FOLLOW_PASSES):
        seen = wake.requested_at(checkout.paths.parallel)
        try:
            this = _pass(checkout, options, now if n == 0 else clock_now(), waiting)
        except RemoteUnreachable:
            if report is None:
                raise
            break  # the first pass did work offline; a follow pass that could do nothing ends the tick
        report = this if report is None else _merged(report, this)
        followed = checkout.config.run.follow_jobs and wake.requested_at(checkout.paths.parallel) > seen
        if not followed or waiting.monotonic() - began > checkout.config.parallel.tick_budget_s:
            break
        logger.debug("a job ended during the tick: one more pass")
    assert report is not None
    return report


def _merged(first: TickReport, then: TickReport) -> TickReport:
    first.actions.extend(then.actions)
    first.workers = then.workers
    return first


def _pass(checkout: Checkout, options: TickOptions, now: datetime, waiting: Waiting) -> TickReport:
    git = checkout.git()
    base = checkout.base_branch()
    with TickLock(checkout.paths.lock, now=now):
        rotate(checkout.paths.events, checkout.config.parallel.log_max_bytes)
        ledger = Ledger.load(
            checkout.paths, now=now, target_branch=base, remote=checkout.remote, hooks=checkout.config.hooks
        )
        crew = Crew(
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
        stamp.clear(checkout.paths.parallel)  # this tick decides anew whether ticks may idle
        _repair(crew)
        loaded = _content(crew.state)
        workers_loaded = loaded["workers"]
        _retarget(crew)
        _prune(crew)
        preflight(crew)
        crew.fetch_or_go_offline()
        if crew.offline is None:
            hosts.begin(crew)
        conductor = _conductor(crew)
        if crew.offline is None:  # the remote must say whether a push arrived
            _recover_push(crew, conductor)
        enforce_budget(crew)
        hosts.keep(crew)  # before reaping: a worker whose claim was lost goes no further
        _advance(crew, conductor)
        if crew.offline is None:
            watch.look(crew, conductor)
        _run_train(crew, conductor)
        if crew.offline is None:
            _land(crew, conductor)
        if crew.offline is None or crew.config.run.offline_spawn:
            _spawn(crew)
        hosts.let_go(crew)
        changed = _content(crew.state) != loaded
        # A tick that changed nothing writes nothing (cron runs many of those), except the first,
        # so that status can tell a tick ran.
        if ledger.on_disk is None or changed:
            crew.save()
        crashpoint("after-save")
        _settle(crew)
    hosts.check(crew)
    if crew.offline is not None:
        moved = _content(crew.state)["workers"] != workers_loaded  # a job reaped, started, gated
        _offline_end(crew, did_something=moved or bool(crew.report.actions))
    crew.report.workers = crew.state.lifecycle_counts()
    return crew.report


# --- steps ------------------------------------------------------------------------------------------


def _offline_end(crew: Crew, *, did_something: bool) -> None:
    """An offline tick that moved work on ends 0 (the tick's health still notes the remote); one that
    could do nothing at all fails with the fetch's error."""
    assert crew.offline is not None
    health.note_remote_unreachable(crew.offline)
    if not did_something:
        raise RemoteUnreachable(crew.offline)


def _repair(crew: Crew) -> None:
    """What a killed tick left of ralph's git state goes first, before anything can fail on it."""
    live = frozenset(w.task_id for w in crew.state.workers if w.lifecycle is Lifecycle.CHECKING)
    if crew.state.watch.job is not None:
        live |= {watch.WATCH_ID}
    repair.repair(crew.paths, gates=crew.paths.workspace_root / GATES_DIR, live_gates=live)


def _retarget(crew: Crew) -> None:
    if crew.state.target_branch == crew.base and crew.state.remote == crew.checkout.remote:
        return
    busy = [w.task_id for w in crew.state.workers if w.lifecycle not in Lifecycle.terminal()]
    if busy:
        raise StateError(
            f"state.json belongs to {crew.state.remote}/{crew.state.target_branch} but the config says "
            f"{crew.checkout.remote}/{crew.base}, and {', '.join(busy)} are in flight; set git.base_branch "
            "back until they finish, or `ralph cancel` them first"
        )
    logger.info(
        "retargeting from %s/%s to %s/%s",
        crew.state.remote,
        crew.state.target_branch,
        crew.checkout.remote,
        crew.base,
    )
    crew.state.target_branch = crew.base
    crew.state.remote = crew.checkout.remote
    crew.state.train = None


def _prune(crew: Crew) -> None:
    """Drop old finished records and the workspaces they kept (after saving any unlanded commits)."""
    pruned = prune_terminal(
        crew.state, now=crew.now, ttl_hours=crew.config.parallel.terminal_worker_ttl_hours
    )
    retention = timedelta(hours=crew.config.parallel.workspace_retention_hours)
    expired = [
        w
        for w in crew.state.workers
        if w.lifecycle in (Lifecycle.COMPLETED, Lifecycle.FAILED)
        and w.completed_at is not None
        and crew.now - w.completed_at >= retention
        and Path(w.workspace_path).exists()
    ]
    for n, worker in enumerate([*pruned, *expired]):
        if n == 1:
            crashpoint("mid-prune")
        crew.remove_workspace(worker)
    for worker in pruned:
        rmtree(crew.paths.run_dir(worker.task_id), ignore_errors=True)
        logger.debug("%s: pruned its %s record", worker.task_id, worker.lifecycle)
    if pruned or expired:
        crew.save()


def _conductor(crew: Crew) -> Conductor:
    assert crew.source is not None
    ci = crew.config.ci
    rules = Rules(
        gate=bool(ci.command),
        max_parallel=ci.max_parallel or crew.options.workers or crew.config.parallel.workers,
        verify_rebased=ci.verify_rebased,
        max_rebuilds=crew.config.landing.max_rebuilds,
        ignore=(crew.source.queue_path, crew.source.done_path),
    )
    return Conductor(crew.state, crew.git, crew, rules, scratch=crew.paths.scratch, now=crew.now)


def _in_queue_order(crew: Crew, workers: list[Worker]) -> list[Worker]:
    assert crew.queues is not None
    order = crew.queues.positions()
    return sorted(workers, key=lambda w: (order.get(w.task_id, len(order)), w.started_at))


def _advance(crew: Crew, conductor: Conductor) -> None:
    """Every worker in flight: stopped if its task is closed elsewhere, else its finished job reaped; then
    the train follows the base. Gates are read first: a verdict on code that an outside push leaves
    alone (ci.verify_rebased false or "overlap") must not be thrown away with the commit it judged."""
    in_flight = [w for w in crew.state.workers if w.lifecycle not in Lifecycle.terminal()]
    for worker in _in_queue_order(crew, in_flight):
        try:
            if crew.closed_elsewhere(worker):
                continue
            if worker.lifecycle in Lifecycle.active():
                reap(crew, worker, conductor)
        except RalphError as e:
            if resource_error(e) is not None:
                raise  # a full disk is the machine's trouble, not the task's: no attempt is spent on it
            # One task's trouble must not stop the others.
            crew.fail(worker, str(e))
            crew.save()
    _follow(crew, conductor)


# --- the merge train ---------------------------------------------------------------------------------


def _follow(crew: Crew, conductor: Conductor) -> None:
    """The train stands on the base as just fetched; first, what a rewind of it took is looked for."""
    rewinds.check(crew)
    conductor.follow(crew.base_sha)


def _run_train(crew: Crew, conductor: Conductor) -> None:
    """Follow the base, take in what became ready, blame a failure, start the gates slots allow."""
    _follow(crew, conductor)
    _starving(crew, conductor)  # once per starvation: a landing clears it
    conductor.restack(0)  # positions behind one that left (blocked, failed, closed) stand on the one ahead
    waiting = [w for w in crew.state.workers if w.lifecycle is Lifecycle.INTEGRATING]
    waiting = [w for w in waiting if conductor.train.position(w.task_id) is None]
    waiting.sort(key=lambda w: w.updated_at)  # the order work became ready
    conductor.prepare(waiting)
    for worker in waiting:
        try:
            conductor.join(worker)
        except RalphError as e:
            if resource_error(e) is not None:
                raise
            crew.fail(worker, str(e))
    conductor.blame()
    conductor.start_gates()


def _starving(crew: Crew, conductor: Conductor) -> None:
    train = conductor.train
    if train.rebuilds < crew.config.landing.max_rebuilds or train.starved_at is not None:
        return
    train.starved_at = crew.now
    tasks = ", ".join(p.task_id for p in train.positions)
    detail = (
        f"the merge train was stacked again {train.rebuilds} times by outside pushes without landing "
        f"({tasks}); it keeps trying, but the base moves faster than its gate "
        '(ci.verify_rebased = "overlap" or false may help)'
    )
    crew.act("train", "starved", detail)
    front = crew.state.worker(train.positions[0].task_id) if train.positions else None
    if front is not None:  # an event (events.jsonl, hooks.on_event) on the task held at the front
        crew.ledger.report(front, "starved", detail, sha=train.base_sha)


def _recover_push(crew: Crew, conductor: Conductor) -> None:
    """A tick killed after its push: the chain it saved before pushing is on the base now, or it never
    arrived (then the train simply lands again)."""
    train = crew.state.train
    if train is None or not train.pushing:
        return
    chain = dict(train.pushing)
    tip = next(reversed(chain.values()))
    train.pushing = {}
    if not crew.git.is_ancestor(tip, crew.base_sha):
        crew.save()
        return
    count = 0
    for task_id, commit in chain.items():
        worker = crew.state.worker(task_id)
        if worker is not None and worker.lifecycle in Lifecycle.in_train():
            _landed(crew, worker, commit)
            count += 1
    if crew.sharing is not None:
        crew.sharing.claims.forget(chain)  # the push deleted their claims with it
    conductor.landed(tip, chain)
    watch.landed(crew, conductor, tip)
    crew.save()


def _land(crew: Crew, conductor: Conductor) -> None:
    """The longest passed prefix, as one chain, in one push with a lease; lost races back off within the
    tick's budget, then on later ticks."""
    train = conductor.train
    parallel = crew.config.parallel
    redos = 0
    while True:
        if train.next_attempt_at is not None and crew.now < train.next_attempt_at:
            return
        prefix = conductor.landable()
        if not prefix:
            return
        try:
            chain = _build(crew, prefix)
        except FollowupError as e:
            worker = crew.state.worker(prefix[0].task_id)
            assert worker is not None
            crew.block(worker, str(e))
            conductor.restack(0)
            crew.save()
            continue
        train.pushing = dict(chain.commits)
        crew.save()
        built_on = crew.base_sha
        crew.refetch_if_stale()
        if crew.base_sha != built_on:
            # Someone pushed while the chain was built: build it again on what is there now, a few
            # times; then the next tick does. A chain built on an older base is never pushed: the
            # remote would take it as dropping their commits, and every task in it would be blocked.
            train.pushing = {}
            _follow(crew, conductor)
            redos += 1
            if redos <= landing.MAX_QUICK_REDOS:
                continue
            detail = f"{crew.checkout.remote}/{crew.base} moved {redos} times while the chain was built"
            crew.act(prefix[0].task_id, "push_race", f"{detail}; the next tick builds it again")
            crew.save()
            return
        crashpoint("before-push")
        fenced = hosts.push_landing(crew, chain.tip, list(chain.commits))
        if fenced.pushed is None:
            # A claim was lost to another host: that task may not land from here. It leaves the
            # train, and the train is built again without it.
            train.pushing = {}
            for task_id, why in fenced.lost.items():
                hosts.stop(crew, crew.state.worker(task_id), why)
            conductor.restack(0)
            crew.save()
            continue
        pushed = fenced.pushed
        if pushed.status is PushStatus.OK:
            crashpoint("after-push-before-save")
            _record_landing(crew, conductor, chain)
            hosts.prune(crew)
            return
        train.pushing = {}
        workers = [crew.state.worker(p.task_id) for p in prefix]
        for worker, position in zip(workers, prefix, strict=True):
            assert worker is not None
            worker.verified_sha = position.commit  # passed the gate: a retry lands it again
        if pushed.status is PushStatus.PERMANENT:
            for worker in workers:
                assert worker is not None
                worker.push_attempts += 1
                crew.block(worker, f"{crew.checkout.remote} refused the push: {pushed.message}")
            conductor.restack(0)
            crew.save()
            return
        train.push_attempts += 1
        train.last_error = f"{pushed.status.value}: {pushed.message}"
        for worker in workers:  # each task's own count, for its history
            assert worker is not None
            worker.push_attempts += 1
            worker.last_error = train.last_error
        if train.push_attempts >= parallel.max_push_attempts:
            used = f"{train.push_attempts}/{parallel.max_push_attempts}"
            reason = f"push attempts used up ({used}); last: {train.last_error}"
            for worker in workers:
                assert worker is not None
                crew.block(worker, reason)
            train.push_attempts = 0
            conductor.restack(0)
            crew.save()
            return
        delay = landing.backoff_s(parallel.push_backoff_ms, train.push_attempts, crew.waiting.rng)
        if crew.time_left() <= delay:
            train.next_attempt_at = crew.now + timedelta(seconds=crew.elapsed() + delay)
            crew.act(
                prefix[0].task_id,
                "push_race",
                f"push {train.push_attempts} did not land ({train.last_error}); "
                f"next attempt at {train.next_attempt_at:%Y-%m-%dT%H:%M:%SZ}",
            )
            crew.save()
            return
        logger.info("push %d did not land (%s); again in %.1fs", train.push_attempts, train.last_error, delay)
        crew.save()
        crew.waiting.sleep(delay)  # longer than refetch_if_stale's limit: the next attempt looks again
        crew.refetch_if_stale()
        _follow(crew, conductor)


def _build(crew: Crew, prefix: list[Any]) -> landing.Chain:
    assert crew.source is not None and crew.queues is not None
    landings = []
    for position in prefix:
        worker = crew.state.worker(position.task_id)
        assert worker is not None and worker.base_sha is not None and worker.head_sha is not None
        landings.append(
            landing.Landing(
                task=crew.task(worker.task_id),
                position=position.commit,
                onto=position.onto,
                base=worker.base_sha,
                head=worker.head_sha,
                run_dir=crew.paths.run_dir(worker.task_id),
            )
        )
    return landing.build_chain(
        crew.git,
        base_sha=crew.base_sha,
        landings=landings,
        source=crew.source,
        queues=crew.queues,
        config=crew.config,
        now=crew.now.replace(microsecond=0),
        scratch=crew.paths.scratch,
    )


def _record_landing(crew: Crew, conductor: Conductor, chain: landing.Chain) -> None:
    assert crew.source is not None
    for task_id, commit in chain.commits.items():
        worker = crew.state.worker(task_id)
        assert worker is not None
        if crew.source.mode is Mode.UNTRACKED:
            landing.archive_locally(crew.paths, task_id, chain.followups.get(task_id, []), crew.now)
        _landed(crew, worker, commit)
    conductor.landed(chain.tip, chain.commits)
    watch.landed(crew, conductor, chain.tip)
    crew.base_sha = chain.tip
    if crew.source.mode is Mode.UNTRACKED:
        crew.read_base()
    elif chain.queues is not None and chain.files is not None:
        # The files just pushed are the base's now: no need to read back (and validate again) a queue
        # of thousands of tasks. What depended on the landed tasks may start in this tick.
        crew.queues = chain.queues
        keep_landed(crew.checkout, *chain.files, chain.queues, tip=chain.tip)
    crew.save()
    for task_id in chain.commits:
        worker = crew.state.worker(task_id)
        assert worker is not None
        crew.remove_workspace(worker, landed=True)


def _landed(crew: Crew, worker: Worker, commit: str) -> None:
    path = Path(worker.workspace_path)
    markers.clear_ci_failure(path)
    markers.clear_blocked_push(path)
    position = crew.state.train.position(worker.task_id) if crew.state.train else None
    worker.verified_sha = position.commit if position else worker.verified_sha
    worker.landed_sha = commit
    worker.next_attempt_at = None
    worker.last_error = None
    crew.ledger.transition(worker, Lifecycle.COMPLETED, f"landed {commit[:10]} on {crew.base}", sha=commit)
    crew.act(worker.task_id, "landed", f"landed {commit[:10]} on {crew.base}")


# --- select and spawn -------------------------------------------------------------------------------


def _runnable(crew: Crew) -> list[Task]:
    hosts.adopt_fresh_rounds(crew)  # a `ralph retry` made on another host counts here too
    runnable = _selected(crew)
    if runnable and hosts.fetch_after_board(crew):
        runnable = _selected(crew)  # the base moved: what landed meanwhile is not started again
    return hosts.startable(crew, runnable)  # what every host's record and claims allow


def _selected(crew: Crew) -> list[Task]:
    assert crew.queues is not None
    return crew.queues.runnable(
        crew.state.by_task(),
        crew.now,
        max_attempts=crew.config.agent.max_attempts,
        include_draft=crew.options.include_draft,
        only=crew.options.only,
    )


def _spawn(crew: Crew) -> None:
    if crew.queues is None:
        # A landing found the base's queue unreadable after this tick's first read: nothing new
        # starts from a queue nobody can read (the landing said why, and waits).
        logger.warning(
            "not starting new tasks: the queue on %s/%s cannot be read", crew.checkout.remote, crew.base
        )
        return
    runnable, limit = _startable(crew)
    started = 0
    while runnable and started < limit and (crew.sharing is None or crew.sharing.error is None):
        batch, runnable = runnable[: limit - started], runnable[limit - started :]
        # A task claimed by another host first is not started here: the next runnable one may be.
        for task, attempt in hosts.claim(crew, batch):
            if attempt is not None:
                _start_task(crew, task, attempt)
                started += 1


def _to_start(crew: Crew) -> list[Task]:
    """Runnable tasks in queue order, as many as free slots and --max-tasks allow; none while paused."""
    runnable, limit = _startable(crew)
    return runnable[:limit]


def _startable(crew: Crew) -> tuple[list[Task], int]:
    """Runnable tasks in queue order, and how many may start (free slots, --max-tasks; none paused)."""
    paused = read_pause(crew.paths.pause)
    if paused is not None:
        if _runnable(crew):
            logger.info("not starting new tasks: %s; `ralph resume` to go on", paused.describe())
        return [], 0
    held = crew.state.runner_pause(crew.config.agent.runner, crew.now)
    if held is not None:
        if _runnable(crew):
            logger.info("not starting new tasks: %s; `ralph resume` to go on now", held.describe(crew.now))
        return [], 0
    limit = crew.agent_slots()
    if crew.options.max_tasks:
        limit = min(limit, crew.options.max_tasks)
    runnable = [t for t in _runnable(crew) if within_budget(crew, crew.state.worker(t.id))]
    return runnable, max(0, limit)


def _start_task(crew: Crew, task: Task, attempt: int) -> None:
    worker = crew.state.worker(task.id)
    path = crew.paths.workspace(task.id)
    new = worker is None
    if worker is None:
        worker = Worker(
            task_id=task.id,
            lifecycle=Lifecycle.FAILED,  # becomes running once its job is recorded
            attempt=attempt,
            workspace_path=str(path),
            started_at=crew.now,
            updated_at=crew.now,
            completed_at=crew.now,
        )
        crew.state.workers.append(worker)
    else:
        # A retry reuses the record: one record per task, with its attempt count.
        worker.attempt = attempt  # after every attempt made here or, as the remote counts, elsewhere
        worker.workspace_path = str(path)
        worker.started_at = crew.now
        worker.remediations = 0
        worker.push_attempts = 0
        worker.head_sha = worker.verified_sha = worker.landed_sha = None
        worker.next_attempt_at = None
        worker.last_error = None
        worker.conflicts = []
    worker.base_sha = crew.base_sha
    try:
        prompt = prompts.task_prompt(
            task,
            workspace=str(path),
            base_branch=crew.base,
            ci_command=crew.config.ci.command,
            can=crew.abilities(),
        )
        detail = f"attempt {worker.attempt}/{crew.config.agent.max_attempts} on {crew.base_sha[:10]}"
        crew.start_agent(
            worker, prompt, lifecycle=Lifecycle.RUNNING, detail=detail, new=new, checkout_at=crew.base_sha
        )
    except (RalphError, OSError) as e:
        worker.job = None
        crew.fail(worker, f"could not start: {e}")
        crew.save()


# --- the end of a tick ------------------------------------------------------------------------------


def _settle(crew: Crew) -> None:
    """After the last write: when nothing is in flight and nothing could start, leave the idle stamp
    the next tick checks before importing anything heavy (ralph.stamp)."""
    busy = any(w.lifecycle not in Lifecycle.terminal() for w in crew.state.workers)
    if crew.report.actions or busy or crew.queues is None:
        return
    if _runnable(crew) and read_pause(crew.paths.pause) is None:
        return  # work it could start but did not (no slot, a start that failed): look again next tick
    watched = [crew.paths.config, crew.paths.rust_config, crew.paths.state, crew.paths.pause]
    if crew.source is not None and crew.source.mode is Mode.UNTRACKED:
        watched += [crew.paths.queue_file(), crew.paths.done_file()]
    stamp.write(
        crew.paths.parallel,
        remote=crew.checkout.remote,
        base=crew.base,
        base_sha=crew.base_sha,
        wake_at=_wake_at(crew),
        watched=watched,
        shared=hosts.shared_digest(crew),  # another host's retry or release wakes this one
    )


def _wake_at(crew: Crew) -> datetime | None:
    """The earliest time something falls due without anyone touching a file: a retry after its
    backoff, a scheduled start, a record's expiry, a runner's pause ending."""
    config = crew.config
    times: list[datetime] = []
    ttl = timedelta(hours=config.parallel.terminal_worker_ttl_hours)
    retention = timedelta(hours=config.parallel.workspace_retention_hours)
    for w in crew.state.workers:
        if w.next_attempt_at is not None and w.attempt < config.agent.max_attempts:
            times.append(w.next_attempt_at)
        if w.completed_at is not None and w.lifecycle in (Lifecycle.COMPLETED, Lifecycle.FAILED):
            times += [w.completed_at + ttl, w.completed_at + retention]
    times += [p.until for p in crew.state.runner_pauses]
    times += hosts.wake_at(crew)  # another host's claim turning stale: its task may be taken over
    assert crew.queues is not None
    times += crew.queues.scheduled_times()
    future = [t for t in times if t > crew.now]
    return min(future, default=None)


def _content(state: State) -> dict[str, Any]:
    """The state as saved, but for its own timestamp."""
    return state.model_dump(exclude={"updated_at"})


# --- dry run ----------------------------------------------------------------------------------------


def _dry_run(checkout: Checkout, options: TickOptions, now: datetime) -> TickReport:
    """What would start, from what is on disk now: no lock, no fetch, no write."""
    git = checkout.git()
    base = checkout.base_branch()
    state = load_state(checkout.paths.state, now=now, target_branch=base, remote=checkout.remote)
    crew = Crew(
        checkout,
        options,
        Ledger(state, checkout.paths, now),
        git,
        base,
        TickReport(started_at=now, dry_run=True),
    )
    check_workspace_root(git, checkout.paths)
    runners.resolve_agent(checkout.config.agent, checkout.root)
    crew.base_sha = rev(git, crew.base_ref)
    crew.read_base()
    to_start = _to_start(crew)
    for task in to_start:
        crew.act(task.id, "would_start", f"would start: {task.title}")
    if not to_start and read_pause(crew.paths.pause) is None:
        if not _runnable(crew):
            logger.info("nothing to start: no runnable task (`ralph queue explain` says why)")
        else:
            logger.info(
                "nothing to start: all %d worker slots are busy",
                options.workers or checkout.config.parallel.workers,
            )
    crew.report.workers = state.lifecycle_counts()
    return crew.report
