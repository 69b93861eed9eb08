"""The real agent CLIs driven by ralph: ticks with `runner = "claude"`, `"codex"` (and gemini, opencode)
against tests/model_server.py, every job in ralph's default sandbox (bubblewrap), until the task lands.

Per preset: a plain task in which the agent writes a file, runs a program through its shell tool and
commits; a task whose first gate run fails and the CI remediation agent fixes; a merge conflict the
agent resolves by editing the files ralph hands it. And, where the CLI gives up at once, a usage-limit
reply that pauses the runner until the reset without spending an attempt.

Marked `agents`: outside CI a missing CLI or bwrap skips with the reason, under CI=true it fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from agents import require_bwrap, require_cli
from conftest import BASE, git
from harness import Project, all_landed, make_project, summary
from helpers import ralph
from model_server import (
    USAGE_CACHED,
    USAGE_INPUT,
    USAGE_OUTPUT,
    Answer,
    Fail,
    ModelServer,
    Shell,
    Turn,
    WriteFile,
)

from ralph import clock
from ralph.state import Lifecycle, State

pytestmark = pytest.mark.agents

KEY_VARIABLE = "SCRIPTED_API_KEY"
# Each run takes seconds; these only bound a CLI or a tick loop that hangs.
RUN_TIMEOUT_MINUTES = 3
LAND_TIMEOUT_S = 120


def settings(name: str, url: str) -> dict[str, object]:
    """agent.* for `name` against the scripted server: its endpoint and key, as a team would set them."""
    agent: dict[str, object] = {
        "runner": name,
        "binary": require_cli(name),
        "base_url": url,
        "api_key_env": KEY_VARIABLE,
        "timeout_minutes": RUN_TIMEOUT_MINUTES,
    }
    if name == "codex":
        agent["model"] = "gpt-5.5"  # a model it has metadata for: it then offers its standard tools
    if name == "opencode":
        agent["model"] = "scripted-model"
        agent["env"] = {"OPENCODE_DISABLE_MODELS_FETCH": "1"}  # offline: no models.dev lookup
    return agent


@pytest.fixture
def project(origin: Path, control: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    require_bwrap()
    monkeypatch.setenv(KEY_VARIABLE, "sk-scripted")
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return make_project(origin, control)


def drive(
    project: Project, name: str, script: list[Turn], done: Callable[[State], bool], **agent: object
) -> tuple[State, ModelServer]:
    """Serve `script`, point `name` at it, and tick until `done`."""
    server = ModelServer(script, text_edits=name == "aider")
    with server:
        project.configure(agent={**settings(name, server.url), **agent})
        state = project.run_until(done, timeout=LAND_TIMEOUT_S)
    assert server.problems == [], server.problems
    return state, server


def turns_answered(server: ModelServer) -> int:
    return sum(r.answered.startswith("turn ") for r in server.model_requests())


PRESETS = ["claude", "codex", "gemini", "opencode"]


@pytest.mark.parametrize("name", PRESETS)
def test_a_task_in_which_the_agent_runs_a_program_and_commits_lands(project: Project, name: str) -> None:
    task = project.add("Compute the answer")
    ws = project.paths.workspace(task)
    script: list[Turn] = [
        [WriteFile(str(ws / "hello.txt"), "hello from the model\n")],
        [Shell("python3 -c 'print(6 * 7)' > answer.txt")],
        [
            Shell(
                f"git add hello.txt answer.txt && git commit -q -m '{task}: Compute the answer' "
                "&& git log -1 --format='committed %s'"
            )
        ],
        Answer("All done."),
    ]
    state, server = drive(project, name, script, all_landed(1))
    assert project.origin_file("answer.txt") == "42"
    assert project.origin_file("hello.txt") == "hello from the model"
    assert project.origin_log()[0] == f"{task}: Compute the answer"  # its work and its archive, one commit
    # The agent committed through its shell tool: git's answer went back to the model.
    assert any(f"committed {task}: Compute the answer" in text for text in server.tool_results())
    # Its usage report reached the worker record and `ralph status --json`.
    (entry,) = state.workers[0].usage
    answered = len(server.model_requests()) if name == "gemini" else turns_answered(server)
    assert entry.output_tokens == answered * USAGE_OUTPUT
    assert entry.cached_input_tokens == answered * USAGE_CACHED
    assert entry.input_tokens == answered * (USAGE_INPUT - USAGE_CACHED)
    assert (entry.cost_usd is not None) == (name == "claude")  # only Claude Code prices its tokens
    doc = json.loads(ralph(project.control, "status", "--json").stdout)
    assert doc["workers"][0]["usage"]["output_tokens"] == answered * USAGE_OUTPUT


def test_aider_lands_its_edit_and_keeps_the_files_ralph_names_out_of_its_chat(project: Project) -> None:
    """aider pulls every tracked file its message names into its chat, editable, without asking under
    --yes-always; ralph's prompt names the gate's program. ralph's ignore file keeps it out."""
    task = project.add("Say hello")
    ws = project.paths.workspace(task)
    script: list[Turn] = [[WriteFile(str(ws / "hello.txt"), "hello from the model\n")]]
    _, server = drive(project, "aider", script, all_landed(1))
    assert project.origin_file("hello.txt") == "hello from the model"  # aider edits; ralph commits
    prompt = next(project.paths.run_dir(task).glob("*prompt.md")).read_text()
    assert ".ci-check.py" in prompt  # the mention aider would act on
    sent = json.dumps([r.body for r in server.model_requests()])
    assert '\\"FIX\\" + \\"ME\\"' not in sent and "ci: {word} left in" not in sent  # the gate's source
    log = (project.paths.run_dir(task) / "agent.log").read_text()
    assert "Added .ci-check.py to the chat" not in log
    assert "Added .ralph/" not in log


@pytest.mark.parametrize("name", ["claude", "codex"])
def test_a_failing_gate_is_fixed_by_the_remediation_agent(project: Project, name: str) -> None:
    task = project.add("Leave a note")
    notes = project.paths.workspace(task) / "notes.txt"
    script: list[Turn] = [
        [WriteFile(str(notes), "FIXME: say more\n")],
        [Shell(f"git add notes.txt && git commit -q -m '{task}: Leave a note'")],
        Answer("Done, but the gate will not like it."),
        # The remediation run: the prompt quotes the gate's output; the agent edits, ralph commits.
        [WriteFile(str(notes), "fixed: say more\n")],
        Answer("Fixed."),
    ]
    state, _ = drive(project, name, script, all_landed(1))
    worker = state.workers[0]
    assert worker.remediations == 1 and worker.attempt == 1
    assert project.origin_file("notes.txt") == "fixed: say more"
    assert [(u.attempt, u.remediation) for u in worker.usage] == [(1, 0), (1, 1)]
    events = [e["event"] for e in project.events() if e["task_id"] == task and e["event"] != "usage"]
    assert events[0] == "running" and events[-1] == "completed"
    assert events.count("remediating") == 1 and events.count("checking") == 2


@pytest.mark.parametrize("name", ["claude", "codex"])
def test_a_merge_conflict_is_resolved_by_the_agent_editing_the_files(
    project: Project, name: str, clone: Callable[[str], Path]
) -> None:
    (project.control / "shared.txt").write_text("value = 0\n")
    project.commit_and_push("a shared file")
    task = project.add("Set A")
    shared = project.paths.workspace(task) / "shared.txt"
    script: list[Turn] = [
        [WriteFile(str(shared), "value = A\n")],
        [Shell(f"git commit -q -am '{task}: Set A'")],
        Answer("Set."),
        # The conflict remediation: the file holds both sides between markers; keep both.
        [WriteFile(str(shared), "value = A\nvalue = B\n")],
        Answer("Resolved."),
    ]
    server = ModelServer(script)
    with server:
        project.configure(agent=settings(name, server.url))
        project.tick()  # the agent starts on the base as it is now
        rival = clone("rival")
        (rival / "shared.txt").write_text("value = B\n")
        git(rival, "commit", "-q", "-am", "someone else sets B")
        git(rival, "push", "-q", "origin", f"HEAD:{BASE}")
        state = project.run_until(all_landed(1), timeout=LAND_TIMEOUT_S)
    assert server.problems == []
    worker = state.workers[0]
    assert worker.remediations == 1
    assert project.origin_file("shared.txt") == "value = A\nvalue = B"
    prompt = next(project.paths.run_dir(task).glob("agent-*-r1-*.prompt.md")).read_text()
    assert prompt.startswith(f"# MERGE CONFLICT: resolve it (task {task}")
    assert "- `shared.txt`" in prompt
    # The agent was handed the markers, and what it sent back as the file's new content has none.
    results = server.tool_results()
    assert not any(re.search(r"^(<<<<<<<|>>>>>>>)", text, re.M) for text in results[-1:])
    assert project.origin_log()[:2] == [f"{task}: Set A", "someone else sets B"]


# name: (the reply, more agent settings, the pause's reason as ralph writes it)
LIMITS: dict[str, tuple[Fail, dict[str, object], str]] = {
    # Logged in to a Claude plan (an OAuth token, no API key): one request, a rate_limit_event.
    "claude": (
        Fail("usage_limit", times=None, reset_in=7200),
        {"api_key_env": "", "env": {"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-scripted"}},
        "usage limit (5-hour), reset stated by the CLI",
    ),
    # A ChatGPT plan's limit: "try again at <time>".
    "codex": (Fail("usage_limit", times=None, reset_in=7200), {}, "usage limit, reset stated by the CLI"),
    # A daily quota: its error dump quotes the provider's "Please retry in 7200s."
    "gemini": (Fail("usage_limit", times=None, reset_in=7200), {}, "daily quota, reset stated by the CLI"),
}


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_a_usage_limit_pauses_the_runner_until_the_reset_without_spending_an_attempt(
    project: Project, name: str
) -> None:
    fail, extra, reason = LIMITS[name]
    task = project.add("Hit the limit")
    state, server = drive(project, name, [fail], lambda s: bool(s.runner_pauses), **extra)
    worker = state.worker(task)
    assert worker is not None, summary(state)
    assert (worker.lifecycle, worker.attempt) == (Lifecycle.FAILED, 0)
    (pause,) = state.runner_pauses
    assert (pause.runner, pause.reason) == (name, reason)
    reset = clock.now() + timedelta(seconds=fail.reset_in)
    assert abs(pause.until - reset) < timedelta(minutes=2)  # codex states it to the minute
    asked = len(server.model_requests())
    # Later ticks start nothing while the pause holds: no request reaches the model.
    with server:
        for _ in range(2):
            report = project.tick()
            assert not [a for a in report.actions if a.action == "started_agent"]
    assert len(server.model_requests()) == asked
    assert project.worker(task).attempt == 0
