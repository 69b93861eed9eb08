"""Finished jobs: what a tick does with an agent's or a gate's result, and with what an agent spent.

An agent that exited 0 has its leftovers committed (through ralph's own git directory), its work
fetched into ralph's repository, its conflict markers (after a merge conflict) checked, what it
changed checked against what may land (ralph.policy), its follow-up proposal taken, and then it joins
the merge train. A gate's verdict goes to its train position. A job that timed out, was lost or failed
ends the attempt. A run that stopped at a usage limit is not the task's fault: its attempt is given
back and its runner paused (README "Agent runners").
"""

from __future__ import annotations

import logging
from pathlib import Path

from ralph import job as jobs
from ralph import markers, policy, proc, prompts, replay, workspace
from ralph.clock import format_z
from ralph.crash import crashpoint
from ralph.crew import Crew, read_log_tail
from ralph.files import copy_truncate
from ralph.followups import FollowupError, take_proposal
from ralph.meter import take_stock
from ralph.state import JobKind, Lifecycle, Worker
from ralph.train import Conductor

logger = logging.getLogger(__name__)


def reap(crew: Crew, worker: Worker, conductor: Conductor) -> None:
    """Look at the worker's job: still running, over its deadline, lost, or finished (then act on it)."""
    assert worker.job is not None
    job = worker.job
    identity = job.identity
    grace = crew.config.parallel.kill_grace_seconds
    outcome, result = jobs.check(
        identity, Path(job.result_path), deadline=job.deadline, grace_s=grace, now=crew.now
    )
    if outcome is jobs.Outcome.RUNNING:
        copy_truncate(Path(job.log_path), crew.config.parallel.log_max_bytes)
        return
    if outcome is jobs.Outcome.OVERDUE:
        if proc.kill_group(identity, grace_s=grace):
            crew.fail(worker, f"{job.kind} job timed out (it outlived its deadline and was killed)")
            crew.save()
        else:
            logger.error(
                "%s: %s job pid %s is past its deadline and would not die", worker.task_id, job.kind, job.pid
            )
        return
    if outcome is jobs.Outcome.LOST:
        # The wrapper died, but the command it ran may live on in its group: stop it before a retry
        # resets the workspace under it. Nothing is signalled if the pid is someone else's.
        if not proc.kill_group(identity, grace_s=grace):
            logger.error(
                "%s: %s job pid %s died, but its process group would not; trying again next tick",
                worker.task_id,
                job.kind,
                job.pid,
            )
            return
        crew.fail(
            worker, f"{job.kind} job lost (pid {job.pid} died without a result: killed, or the host rebooted)"
        )
        crew.save()
        return
    assert result is not None
    if job.kind is JobKind.AGENT:
        agent_finished(crew, worker, result)
    else:
        gate_finished(crew, worker, result, conductor)
    crew.save()


# --- agents --------------------------------------------------------------------------------------------


def agent_finished(crew: Crew, worker: Worker, result: jobs.JobResult) -> None:
    what = "agent" if worker.lifecycle is Lifecycle.RUNNING else "remediation agent"
    if not result.error and take_stock(crew, worker, result, what):
        return
    if result.error:
        crew.fail(worker, f"{what} could not start: {result.error}")
        return
    if result.timed_out:
        crew.fail(worker, f"{what} timed out after {crew.config.agent.timeout_minutes:g} min")
        return
    if not result.succeeded:
        crew.fail(
            worker,
            f"{what} failed ({result.describe()}); see {worker.job.log_path if worker.job else 'its log'}",
        )
        return
    path = Path(worker.workspace_path)
    if not workspace.is_valid(path):
        crew.fail(worker, f"workspace {path} is missing or broken")
        return
    task = crew.task(worker.task_id)
    message = prompts.commit_message(task)
    head = workspace.commit_leftovers(
        path, message=message, identity=crew.identity, scratch=crew.paths.scratch
    )
    crashpoint("after-reap-before-save")
    previous = worker.base_sha if worker.lifecycle is Lifecycle.RUNNING else worker.head_sha
    if head == previous:
        crew.fail(worker, f"{what} produced no changes")
        return
    # From here on the work is judged in ralph's own repository, never in the agent's clone.
    workspace.import_commit(crew.git, path, task_id=worker.task_id, rev=head)
    assert worker.base_sha is not None
    if worker.conflicts:
        left = replay.markers_left(crew.git, head, tuple(worker.conflicts))
        if left:
            crew.fail(worker, f"conflict markers are left in {', '.join(left)} after the remediation")
            return
        # The commit with the markers must never land: the resolution is one commit on the base.
        head = replay.squash(crew.git, base=worker.base_sha, head=head, message=message)
        worker.conflicts = []
    assert crew.source is not None
    problems = policy.problems(
        crew.git,
        base=worker.base_sha,
        head=head,
        config=crew.config,
        queue_paths=(crew.source.queue_path, crew.source.done_path),
    )
    worker.head_sha = head
    if problems:
        crew.block(worker, f"{head[:10]} may not land: " + "; ".join(problems))
        return
    try:
        proposed = take_proposal(path, worker.task_id, crew.paths.run_dir(worker.task_id))
    except FollowupError as e:
        crew.block(worker, str(e))
        return
    more = f", proposing {proposed} follow-up task{'s' if proposed != 1 else ''}" if proposed else ""
    crew.ledger.transition(worker, Lifecycle.INTEGRATING, f"committed {head[:10]}", head=head)
    crew.act(worker.task_id, "committed", f"committed {head[:10]}{more}; joins the merge train")


# --- gates ------------------------------------------------------------------------------------------------


def gate_finished(crew: Crew, worker: Worker, result: jobs.JobResult, conductor: Conductor) -> None:
    """The gate's verdict goes to the worker's train position; a failure is blamed by the train once
    every position ahead of it passed (ralph.train)."""
    assert worker.job is not None
    path = Path(worker.workspace_path)
    commit = worker.job.commit or ""
    crew.remove_gate_checkout(worker.task_id)
    if result.error:
        # The gate never judged the work (its checkout or after_create failed, the program is missing).
        crew.fail(worker, f"the CI gate could not run: {result.error}")
        return
    passed = result.succeeded
    if not passed and path.is_dir():
        output = read_log_tail(Path(worker.job.log_path))
        markers.write_ci_failure(
            path,
            markers.CiFailure(
                task_id=worker.task_id,
                command=list(crew.config.ci.command),
                exit_code=result.exit_code,
                timed_out=result.timed_out,
                output_tail=prompts.tail(output),
                log_path=worker.job.log_path,
                generated_at=format_z(crew.now),
            ),
        )
    elif passed:
        markers.clear_ci_failure(path)
    used = conductor.verdict(worker, commit, passed, exit_code=result.exit_code, timed_out=result.timed_out)
    verdict = "passed" if passed else f"failed ({result.describe()})"
    crew.ledger.transition(worker, Lifecycle.INTEGRATING, f"CI {verdict} on {commit[:10]}", head=commit)
    if used:
        crew.act(
            worker.task_id,
            "ci_passed" if passed else "ci_failed",
            f"CI {verdict} at its train position ({commit[:10]})",
        )
    else:
        logger.info(
            "%s: CI %s on %s, which its train position no longer holds", worker.task_id, verdict, commit[:10]
        )
