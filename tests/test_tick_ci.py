"""The CI gate, remediation, the job environment, task text safety, and the tick's options."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BASE, git
from harness import Project, all_landed, make_project, wait_until

from ralph import clock, markers
from ralph.bookkeeping import publish
from ralph.checkout import open_checkout
from ralph.cli import cli
from ralph.queuedoc import QueueEdit
from ralph.state import Lifecycle


@pytest.fixture
def project(origin: Path, control: Path) -> Project:
    return make_project(origin, control)


def fixme_marker(project: Project, task: str) -> markers.CiFailure | None:
    return markers.read_ci_failure(project.paths.workspace(task))


def test_ci_failure_writes_the_marker_and_remediation_fixes_it(project: Project) -> None:
    task = project.add("Leave a note", description="scripted-agent: write notes/todo.md FIXME: say more")
    project.tick()
    project.wait_for_jobs()
    project.tick()  # agent done: committed, CI started
    assert project.worker(task).lifecycle is Lifecycle.CHECKING
    project.wait_for_jobs()
    project.tick()  # CI failed: blamed; a remediation starts in a fresh workspace with the marker
    worker = project.worker(task)
    assert (worker.lifecycle, worker.remediations) == (Lifecycle.REMEDIATING, 1)
    wait_until(lambda: fixme_marker(project, task) is not None, message="the marker in the new workspace")
    marker = fixme_marker(project, task)
    assert marker is not None
    assert (marker.task_id, marker.exit_code, marker.timed_out) == (task, 2, False)
    assert marker.command[1:] == [".ci-check.py"]
    assert "ci: FIXME left in notes/todo.md" in marker.output_tail
    assert marker.log_path == str(project.paths.run_dir(task) / "ci.log")
    assert marker.generated_at.endswith("Z")
    # The remediation agent was told exactly what failed.
    prompts = sorted(project.paths.run_dir(task).glob("agent-a1-r1-*.prompt.md"))
    assert len(prompts) == 1
    prompt = prompts[0].read_text()
    assert prompt.startswith(f"# CI FAILURE: fix it (task {task}, remediation 1 of 3)")
    assert "ci: FIXME left in notes/todo.md" in prompt
    # It fixes the file; CI passes on the new head, the marker is cleared, and the fix lands.
    state = project.run_until(all_landed(1))
    worker = state.workers[0]
    assert project.origin_file("notes/todo.md") == "fixed: say more"
    assert project.origin_log()[0] == f"{task}: Leave a note"  # one commit, the fix squashed in
    assert project.origin_log().count(f"{task}: Leave a note") == 1
    events = [e for e in project.events() if e["task_id"] == task and e["event"] == "integrating"]
    verdicts = [e["detail"] for e in events if e["detail"].startswith("CI ")]
    assert [v.split(" on ")[0] for v in verdicts] == ["CI failed (exit 2)", "CI passed"]


def test_a_passing_gate_clears_the_ci_marker(project: Project) -> None:
    """Seen in a workspace that stays: the remote declines the push, so the task is blocked, not landed."""
    task = project.add("Leave a note", description="scripted-agent: write notes/todo.md FIXME: say more")
    hook = project.origin / "hooks" / "pre-receive"
    # Pushes to the branch only: the server lets ralph's claims (refs/ralph/) through.
    hook.write_text(
        '#!/bin/sh\ngrep -q " refs/heads/" || exit 0\necho "pushes to main are frozen today" >&2\nexit 1\n'
    )
    hook.chmod(0o755)
    state = project.run_until(lambda s: bool(s.workers) and s.workers[0].lifecycle is Lifecycle.BLOCKED_PUSH)
    ws = Path(state.workers[0].workspace_path)
    assert state.workers[0].remediations == 1
    assert fixme_marker(project, task) is None
    assert not (ws / markers.CI_FAILURE).exists() and not (ws / markers.CI_FAILURE_FALLBACK).exists()
    assert markers.read_blocked_push(ws) is not None


def test_ci_marker_names_the_command_and_the_tail_is_bounded(project: Project) -> None:
    noisy = [f"print('line {n}')" for n in range(400)]
    (project.control / ".ci-check.py").write_text("\n".join(noisy) + "\nimport sys\nsys.exit(3)\n")
    project.commit_and_push("a noisy failing gate")
    project.configure(agent={"max_remediations": 0, "max_attempts": 1})
    task = project.add("Anything")
    project.run_until(lambda s: bool(s.workers) and s.workers[0].lifecycle is Lifecycle.FAILED)
    worker = project.worker(task)
    assert worker.last_error == "CI failed (exit 3) at its train position, and 0 remediations are used up"
    marker = fixme_marker(project, task)  # kept: it explains the failure to a person
    assert marker is not None and marker.exit_code == 3
    assert marker.command[1:] == [".ci-check.py"]
    lines = marker.output_tail.splitlines()
    assert lines[-1].startswith("[ralph.job") and "exit 3" in lines[-1]
    assert "line 399" in marker.output_tail and "line 100" not in marker.output_tail
    assert len(lines) <= 200


def test_a_job_sees_only_ralphs_own_variables_and_task_text_is_data(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RALPH_QUEUE_PATH", "/somewhere/else/queue.json")  # a variable of ralph's own run
    monkeypatch.setenv("UNRELATED_SETTING", "not for jobs")
    monkeypatch.setenv("PASSED_ON", "kept")
    for credential in ("SSH_AUTH_SOCK", "GIT_ASKPASS", "GH_TOKEN", "GITHUB_TOKEN"):
        monkeypatch.setenv(credential, "a push credential")
    project.configure(sandbox={"env_passthrough": ["PASSED_ON"]})
    title = (
        """Fix "quotes" and 'single' $(touch pwned-title) `touch pwned-tick` --dangerously-skip-permissions"""
    )
    description = "scripted-agent: record .ralph/cache/record.json\n"
    description += "then $(touch pwned-desc); rm -rf / # and\n--help -rf"
    task = project.add(title, description=description)
    project.tick()
    project.wait_for_jobs()
    ws = project.paths.workspace(task)
    seen = json.loads((ws / ".ralph" / "cache" / "record.json").read_text())
    env = seen["env"]
    assert "RALPH_QUEUE_PATH" not in env
    assert "UNRELATED_SETTING" not in env  # an allowlist: only what sandbox.env_passthrough names
    assert env["PASSED_ON"] == "kept"
    assert [k for k in ("SSH_AUTH_SOCK", "GIT_ASKPASS", "GH_TOKEN", "GITHUB_TOKEN") if k in env] == []
    assert (env["RALPH_TASK_ID"], env["RALPH_BASE_BRANCH"]) == (task, BASE)
    assert env["RALPH_WORKSPACE"] == str(ws)
    assert env["PWD"] == str(ws) and seen["cwd"] == str(ws)
    assert env["HOME"] == str(project.paths.run_dir(task) / "home")
    assert {k for k in env if k.startswith("RALPH_")} == {
        "RALPH_TASK_ID",
        "RALPH_WORKSPACE",
        "RALPH_BASE_BRANCH",
    }
    # argv holds the prompt file's path and nothing of the task's text.
    prompt_file = project.paths.run_dir(task) / "prompt.md"
    assert seen["argv"][1:] == [str(prompt_file)]
    assert not any("pwned" in a or "quotes" in a for a in seen["argv"])
    # The text reached the agent verbatim, as data.
    block = re.search(r"```json\n(.*?)\n```", seen["prompt"], re.S)
    assert block is not None
    task_doc = json.loads(block.group(1))
    assert (task_doc["title"], task_doc["description"]) == (title, description)
    # And nothing in it ran anywhere.
    for place in (project.control, ws, Path.cwd(), tmp_path):
        assert not list(place.glob("pwned*")), place


def test_a_commit_message_is_the_task_title_on_one_line(project: Project) -> None:
    task = project.add("Tidy up", description="scripted-agent: write a.txt one\nscripted-agent: uncommitted")
    state = project.run_until(all_landed(1))
    landed = state.workers[0].landed_sha or ""
    assert git(project.origin, "log", "-1", "--format=%s", landed) == f"{task}: Tidy up"
    changed = git(project.origin, "show", "--name-only", "--format=", landed).splitlines()
    assert sorted(changed) == [".ralph/done.json", ".ralph/queue.json", "a.txt"]


def test_an_agent_that_changes_nothing_fails(project: Project) -> None:
    project.configure(agent={"max_attempts": 1})
    task = project.add("Nothing to do", description="scripted-agent: no-changes")
    project.run_until(lambda s: bool(s.workers) and s.workers[0].lifecycle is Lifecycle.FAILED)
    assert project.worker(task).last_error == "agent produced no changes"


def test_a_failing_agent_is_retried_until_its_attempts_are_used_up(project: Project) -> None:
    project.configure(agent={"max_attempts": 2})
    task = project.add("Always fails", description="scripted-agent: fail")
    project.run_until(
        lambda s: bool(s.workers) and s.workers[0].attempt == 2 and s.workers[0].lifecycle is Lifecycle.FAILED
    )
    worker = project.worker(task)
    assert worker.last_error is not None and worker.last_error.startswith("agent failed (exit 1)")
    project.tick()
    assert project.worker(task).attempt == 2  # no third start
    runs = [e for e in project.events() if e["task_id"] == task and e["event"] == "running"]
    assert [e["attempt"] for e in runs] == [1, 2]


def test_dry_run_says_what_would_start_and_changes_nothing(project: Project) -> None:
    first = project.add("One")
    second = project.add("Two")
    result = CliRunner().invoke(
        cli, ["-C", str(project.control), "run", "--allow-root", "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dry_run"] is True
    assert [(a["task_id"], a["action"]) for a in doc["actions"]] == [
        (first, "would_start"),
        (second, "would_start"),
    ]
    assert not project.paths.state.exists()
    assert not project.paths.workspace_root.exists()
    assert not project.paths.runs.exists()


def test_dry_run_while_paused_would_start_nothing(project: Project) -> None:
    project.add("One")
    runner = CliRunner()
    assert runner.invoke(cli, ["-C", str(project.control), "pause"]).exit_code == 0
    result = runner.invoke(cli, ["-C", str(project.control), "run", "--allow-root", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["actions"] == []
    result = runner.invoke(cli, ["-C", str(project.control), "run", "--allow-root", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "not starting new tasks: paused since " in result.stderr
    assert "would start" not in result.stderr


def test_max_tasks_caps_new_starts_per_tick(project: Project) -> None:
    ids = [project.add(f"Task {n}") for n in range(3)]
    report = project.tick(max_tasks=1)
    assert [a.task_id for a in report.actions if a.action == "started_agent"] == ids[:1]
    report = project.tick(max_tasks=1)
    assert [a.task_id for a in report.actions if a.action == "started_agent"] == ids[1:2]


def test_run_json_summarises_the_tick(project: Project) -> None:
    task = project.add("One")
    result = CliRunner().invoke(cli, ["-C", str(project.control), "run", "--allow-root", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == 1 and doc["dry_run"] is False
    assert [(a["task_id"], a["action"]) for a in doc["actions"]] == [(task, "started_agent")]
    assert doc["workers"]["running"] == 1


def test_logs_prints_the_agent_and_ci_logs(project: Project) -> None:
    task = project.add("One")
    project.run_until(all_landed(1))
    runner = CliRunner()
    agent = runner.invoke(cli, ["-C", str(project.control), "logs", task])
    assert agent.exit_code == 0 and f"started agent for {task}" in agent.stdout
    assert "scripted-agent: task done" in agent.stdout
    ci = runner.invoke(cli, ["-C", str(project.control), "logs", task, "--ci"])
    assert ci.exit_code == 0 and f"finished ci for {task}: exit 0" in ci.stdout
    missing = runner.invoke(cli, ["-C", str(project.control), "logs", "RQ-0999"])
    assert missing.exit_code == 1 and "no agent log for RQ-0999 yet" in missing.stderr


def test_task_add_retries_when_the_base_moves_under_it(project: Project, clone: object) -> None:
    """Someone pushes between our fetch and our push: the lease refuses, ralph rebuilds and pushes again."""
    other = clone("other")  # type: ignore[operator]
    calls = 0

    def append_after_a_rival_push(edit: QueueEdit) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            (other / "rival.txt").write_text("someone else\n")
            git(other, "pull", "-q", "origin", BASE)
            git(other, "add", "rival.txt")
            git(other, "commit", "-q", "-m", "a rival commit")
            git(other, "push", "-q", "origin", f"HEAD:{BASE}")
        new = edit.new_task(checkout.config.queue, title="Raced")
        edit.add(new)
        return new.id

    checkout = open_checkout(project.control)
    outcome = publish(
        checkout,
        checkout.git(),
        BASE,
        change=append_after_a_rival_push,
        message=lambda task_id: f"ralph: add {task_id}",
        now=clock.now(),
        sleep=lambda s: None,
    )
    assert calls == 2 and outcome == "RQ-0001"
    subjects = git(project.origin, "log", "--format=%s", BASE).splitlines()
    assert subjects[:2] == [
        "ralph: add RQ-0001",
        "a rival commit",
    ]  # on top of the rival: nothing overwritten
    assert git(project.origin, "show", f"{BASE}:rival.txt") == "someone else"
    assert project.queue_ids() == ["RQ-0001"]


def test_an_honest_agent_runs_the_gate_itself_in_its_box_commits_and_lands(project: Project) -> None:
    """Full autonomy inside the box: the agent runs the project's checks and git, as its prompt asks."""
    task = project.add(
        "Do it properly",
        description="scripted-agent: write done.txt finished\n"
        "scripted-agent: run python3 .ci-check.py && echo the-gate-passed-in-the-box\n"
        "scripted-agent: run git add done.txt && git commit -qm 'my commit' && echo committed-by-the-agent",
    )
    state = project.run_until(all_landed(1))
    log = (project.paths.run_dir(task) / "agent.log").read_text()
    assert "(in a box)" in log
    assert "the-gate-passed-in-the-box" in log and "committed-by-the-agent" in log
    prompt = (project.paths.run_dir(task) / "prompt.md").read_text()
    assert f"run the CI command `{sys.executable} .ci-check.py` in this checkout" in prompt
    assert "Commit your work with git" in prompt
    assert git(project.origin, "show", f"{BASE}:done.txt") == "finished"
    assert state.workers[0].landed_sha == git(project.origin, "rev-parse", BASE)
