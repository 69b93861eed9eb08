"""Tokens and cost per task, usage limits that pause a runner, and agent.max_cost_usd_per_task, through
real ticks. The agent is tests/fake_cli.py behind a preset: it does the task's work as the scripted
agent does, then prints what the real CLI printed in a recorded case (tests/fixtures/agents/)."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest
from harness import Project, all_landed, make_project
from helpers import ralph

from ralph import clock
from ralph.checkout import open_checkout
from ralph.ledger import edit_state
from ralph.state import Lifecycle

FAKE_CLI = Path(__file__).resolve().parent / "fake_cli.py"


@pytest.fixture
def project(origin: Path, control: Path) -> Project:
    return make_project(origin, control, agent={"runner": "claude", "binary": str(FAKE_CLI)})


def settled(project: Project) -> None:
    """Tick until the task's agent run has been read (its job's result reaped)."""
    project.tick()
    project.wait_for_jobs()
    project.tick()


def test_a_run_s_tokens_and_cost_are_recorded_and_shown(project: Project) -> None:
    task = project.add("Say hello", description="fake-cli: claude-ok")
    state = project.run_until(all_landed(1))
    (entry,) = state.workers[0].usage
    assert (entry.attempt, entry.remediation) == (1, 0)
    assert (entry.input_tokens, entry.cached_input_tokens, entry.output_tokens) == (3000, 600, 102)
    assert entry.cost_usd == pytest.approx(0.01416)
    (event,) = [e for e in project.events() if e["event"] == "usage"]
    assert event["task_id"] == task and event["runner"] == "claude" and event["input_tokens"] == 3000
    assert event["detail"] == "claude reported $0.01, 3.7k tokens"
    doc = json.loads(ralph(project.control, "status", "--json").stdout)
    assert doc["workers"][0]["usage"] == {
        "input_tokens": 3000,
        "cached_input_tokens": 600,
        "output_tokens": 102,
        "cost_usd": 0.01416,
    }
    assert "$0.01, 3.7k tokens" in ralph(project.control, "status").stdout
    # The usage line in events.jsonl is no phase of its own in the task's history.
    (run,) = json.loads(ralph(project.control, "history", "--json").stdout)["tasks"]
    assert [p["kind"] for p in run["phases"]] == ["agent", "gate", "landing"]
    assert run["usage"]["cost_usd"] == pytest.approx(0.01416)


def test_remediation_runs_add_their_own_entries(project: Project) -> None:
    project.configure(agent={"price_per_mtok": {"input": 3.0, "output": 15.0}, "runner": "codex"})
    project.add(
        "Leave a note",
        description="scripted-agent: write notes/todo.md FIXME: say more\n"
        "fake-cli: codex-ok\nfake-cli: remediate: codex-ok",
    )
    state = project.run_until(all_landed(1))
    usage = state.workers[0].usage
    assert [(u.attempt, u.remediation) for u in usage] == [(1, 0), (1, 1)]
    # codex reports no cost: agent.price_per_mtok gives one.
    assert usage[0].cost_usd == pytest.approx(((3000 + 600) * 3.0 + 102 * 15.0) / 1e6)


def test_a_usage_limit_pauses_the_runner_until_its_reset_without_spending_an_attempt(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    limited = project.add(
        "Hit the limit",
        description="scripted-agent: no-changes\nfake-cli: claude-usage-limit-plan reset-in 7200",
    )
    waiting = project.add("Wait for it")
    project.configure(parallel={"workers": 1})
    settled(project)
    worker = project.worker(limited)
    assert worker.lifecycle is Lifecycle.FAILED
    assert worker.attempt == 0  # the next start is attempt 1 again
    assert worker.last_error is not None and worker.last_error.startswith(
        "agent stopped at a usage limit (5-hour): You've hit your 5-hour limit"
    )
    (pause,) = project.state().runner_pauses
    assert pause.runner == "claude"
    assert abs(pause.until - (clock.now() + timedelta(seconds=7200))) < timedelta(seconds=30)
    assert pause.reason == "usage limit (5-hour), reset stated by the CLI"
    failed = [e for e in project.events() if e["event"] == "failed"]
    assert failed[-1]["paused_until"] == pause.until.strftime("%Y-%m-%dT%H:%M:%SZ")
    # No agent starts while the pause holds: not the limited task, not the next one.
    caplog.set_level(logging.INFO)
    report = project.tick()
    assert not [a for a in report.actions if a.action == "started_agent"]
    assert any(
        "not starting new tasks: claude paused until" in r.getMessage()
        and "usage limit (5-hour), reset stated by the CLI" in r.getMessage()
        for r in caplog.records
    )
    assert project.state().worker(waiting) is None
    # status shows it, and `ralph resume` lifts it: the task starts again, as attempt 1.
    status = ralph(project.control, "status").stdout.splitlines()
    (line,) = [line for line in status if line.startswith("PAUSED: ")]
    assert line.startswith("PAUSED: claude paused until ")
    assert line.endswith(
        "usage limit (5-hour), reset stated by the CLI "
        "(no new claude agent starts; `ralph resume` to go on now)"
    )
    assert any(
        line.strip().startswith("next attempt once the pause ends: claude paused until") for line in status
    )
    doc = json.loads(ralph(project.control, "status", "--json").stdout)
    assert [(p["runner"], p["active"]) for p in doc["runner_pauses"]] == [("claude", True)]
    resumed = ralph(project.control, "resume")
    assert resumed.exit_code == 0, resumed.output
    said = resumed.stdout.splitlines()
    assert said[0] == "resumed"
    assert said[1].startswith("lifted: claude paused until ") and said[1].endswith("reset stated by the CLI")
    assert project.state().runner_pauses == []
    report = project.tick()
    started = [a for a in report.actions if a.action == "started_agent"]
    assert [a.task_id for a in started] == [limited]
    assert "attempt 1/3" in started[0].detail


def test_a_limit_without_a_reset_pauses_five_minutes_then_doubles(project: Project) -> None:
    task = project.add("Rate limited", description="scripted-agent: no-changes\nfake-cli: claude-rate-limit")
    settled(project)
    (pause,) = project.state().runner_pauses
    assert (pause.strikes, pause.until - pause.since) == (1, timedelta(minutes=5))
    assert pause.reason == "rate limit, no reset stated: 5 min (limit 1 in a row)"
    # The pause ends; the task runs again and hits the limit again: twice as long.
    with edit_state(open_checkout(project.control), now=clock.now()) as ledger:
        ledger.state.runner_pauses[0].until = ledger.now - timedelta(seconds=1)
        ledger.save()
    settled(project)
    (pause,) = project.state().runner_pauses
    assert (pause.strikes, pause.until - pause.since) == (2, timedelta(minutes=10))
    assert project.worker(task).attempt == 0


def test_a_remediation_stopped_by_a_limit_restarts_the_task_from_scratch(project: Project) -> None:
    task = project.add(
        "Leave a note",
        description="scripted-agent: write notes/todo.md FIXME: say more\n"
        "fake-cli: claude-ok\nfake-cli: remediate: claude-credit",
    )
    project.run_until(lambda s: bool(s.workers) and bool(s.runner_pauses))
    worker = project.worker(task)
    assert (worker.lifecycle, worker.attempt, worker.conflicts) == (Lifecycle.FAILED, 0, [])
    assert project.state().runner_pauses[0].reason.startswith("out of credit, no reset stated")
    # The task's own run reported its usage; the refused remediation reported none.
    assert [u.remediation for u in worker.usage] == [0]


def test_a_run_over_the_task_s_budget_is_stopped_while_it_runs(project: Project) -> None:
    project.configure(agent={"runner": "opencode", "max_cost_usd_per_task": 0.01})
    task = project.add("Spend", description="fake-cli: opencode-ok-priced hang")  # 3 steps of $0.00357
    project.tick()
    log = project.paths.run_dir(task) / "agent.log"
    deadline = time.monotonic() + 30
    while log.read_bytes().count(b"step_finish") < 3:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    report = project.tick()
    (stopped,) = [a for a in report.actions if a.action == "over_budget"]
    assert stopped.detail.startswith("stopped: its agent runs cost $0.0107, over agent.max_cost_usd_per_task")
    worker = project.worker(task)
    assert worker.lifecycle is Lifecycle.FAILED and worker.next_attempt_at is None
    assert worker.usage[0].cost_usd == pytest.approx(3 * 0.00357)
    project.wait_for_jobs()  # the job was stopped: its wrapper writes a result
    report = project.tick()
    assert not [a for a in report.actions if a.action == "started_agent"]


def test_no_remediation_for_a_task_over_its_budget(project: Project) -> None:
    project.configure(agent={"max_cost_usd_per_task": 0.01})  # claude-ok reports $0.01416
    task = project.add(
        "Leave a note", description="scripted-agent: write notes/todo.md FIXME: say more\nfake-cli: claude-ok"
    )
    # Each tick after the job ended: a tick while it runs could stop it, as its report is over.
    for _ in range(3):
        project.tick()
        project.wait_for_jobs()
    worker = project.worker(task)
    assert worker.lifecycle is Lifecycle.FAILED
    assert worker.remediations == 1
    assert worker.last_error == (
        "not started again: its agent runs cost $0.0142, over agent.max_cost_usd_per_task ($0.01)"
    )
    assert worker.next_attempt_at is None
    assert len(worker.usage) == 1  # the remediation never ran
    report = project.tick()
    assert not [a for a in report.actions if a.action == "started_agent"]
    assert project.worker(task).attempt == 1


def test_a_failed_task_over_its_budget_is_not_tried_again(project: Project) -> None:
    project.configure(agent={"max_cost_usd_per_task": 0.01})
    task = project.add("Fails expensively", description="scripted-agent: fail\nfake-cli: claude-ok")
    settled(project)
    assert (
        project.worker(task).last_error
        == f"agent failed (exit 1); see {project.paths.run_dir(task) / 'agent.log'}"
    )
    report = project.tick()
    assert [a.action for a in report.actions] == ["over_budget"]
    worker = project.worker(task)
    assert worker.attempt == 1
    assert worker.next_attempt_at is None
    assert worker.last_error is not None and "over agent.max_cost_usd_per_task" in worker.last_error


def test_no_remediation_starts_while_the_runner_is_paused(project: Project) -> None:
    project.configure(parallel={"workers": 2})
    limited = project.add(
        "Hit the limit",
        description="scripted-agent: no-changes\nfake-cli: claude-usage-limit-plan reset-in 7200",
    )
    failing = project.add("Leave a note", description="scripted-agent: write notes/todo.md FIXME: say more")
    project.tick()  # both agents start
    project.wait_for_jobs()
    project.tick()  # the first stopped at the limit: the runner pauses; the second's gate starts
    assert project.state().runner_pauses
    assert project.worker(failing).lifecycle is Lifecycle.CHECKING
    project.wait_for_jobs()
    report = project.tick()  # the gate failed: its remediation would be an agent of the paused runner
    assert not [a for a in report.actions if a.action == "started_agent"]
    worker = project.worker(failing)
    assert (worker.lifecycle, worker.attempt) == (Lifecycle.FAILED, 0)
    assert worker.last_error is not None and worker.last_error.startswith("not started: claude paused until")
    assert project.worker(limited).attempt == 0
