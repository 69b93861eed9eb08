"""The real agent CLIs (not yet through ralph) against the scripted model server, each inside a
bubblewrap box as ralph runs agents, in its allow-everything mode: it writes a file with its file tool,
runs a program and `git commit` through its shell tool, and reports its usage. Then the usage-limit
replies that end a run at once. contrib/agents/FACTS.md records what is asserted here.

Marked `agents`; outside CI a missing CLI or bwrap skips with the reason, under CI=true it fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agents import agent_run, box_argv, require_bwrap, write_home_files
from conftest import git
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

pytestmark = pytest.mark.agents

PROMPT = "Create hello.txt, run the program, and commit."
TIMEOUT = 90  # each run takes seconds; this only bounds a CLI that hangs


def run_in_box(
    name: str, script: list[Turn], tmp_path: Path, *, env: dict[str, str | None] | None = None
) -> tuple[subprocess.CompletedProcess[str], ModelServer, Path]:
    """Run the CLI once in a box against a server playing `script`; `env` changes its environment
    (None removes a variable)."""
    bwrap = require_bwrap()
    workspace, home = tmp_path / "ws", tmp_path / "home"
    workspace.mkdir()
    home.mkdir()
    git(workspace, "init", "-q", "-b", "main")
    git(workspace, "commit", "-q", "--allow-empty", "-m", "initial commit")
    server = ModelServer(script, text_edits=name == "aider", workdir=str(workspace))
    with server:
        run = agent_run(name, url=server.url, home=home, prompt=PROMPT, prompt_file=home / "prompt.txt")
        write_home_files(home, run.files)
        for key, value in (env or {}).items():
            if value is None:
                run.env.pop(key, None)
            else:
                run.env[key] = value
        argv = box_argv(run.argv, workspace=workspace, home=home, env=run.env, bwrap=bwrap)
        result = subprocess.run(argv, input=run.stdin, capture_output=True, text=True, timeout=TIMEOUT)
    return result, server, workspace


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def turn_requests(server: ModelServer) -> int:
    return sum(r.answered.startswith("turn ") for r in server.model_requests())


def check_usage(name: str, stdout: str, server: ModelServer) -> None:
    """Each CLI's usage report, in the shape FACTS.md records, adds up what the server reported."""
    events = json_lines(stdout)
    turns = turn_requests(server)
    if name == "claude":
        result = events[-1]
        assert result["type"] == "result" and result["subtype"] == "success" and result["is_error"] is False
        usage = result["usage"]
        assert usage["input_tokens"] == turns * (USAGE_INPUT - USAGE_CACHED)
        assert usage["cache_read_input_tokens"] == turns * USAGE_CACHED
        assert usage["output_tokens"] == turns * USAGE_OUTPUT
        assert result["total_cost_usd"] > 0
    elif name == "codex":
        (done,) = [e for e in events if e["type"] == "turn.completed"]
        assert done["usage"]["input_tokens"] == turns * USAGE_INPUT
        assert done["usage"]["cached_input_tokens"] == turns * USAGE_CACHED
        assert done["usage"]["output_tokens"] == turns * USAGE_OUTPUT
    elif name == "gemini":
        result = events[-1]
        assert result["type"] == "result" and result["status"] == "success"
        # Its router's classification request counts too.
        answered = len(server.model_requests())
        assert result["stats"]["input_tokens"] == answered * USAGE_INPUT
        assert result["stats"]["output_tokens"] == answered * USAGE_OUTPUT
        assert result["stats"]["cached"] == answered * USAGE_CACHED
    elif name == "opencode":
        steps = [e["part"]["tokens"] for e in events if e["type"] == "step_finish"]
        assert len(steps) == turns
        assert sum(s["input"] for s in steps) == turns * (USAGE_INPUT - USAGE_CACHED)
        assert sum(s["cache"]["read"] for s in steps) == turns * USAGE_CACHED
        assert sum(s["output"] for s in steps) == turns * USAGE_OUTPUT


def test_a_missing_cli_skips_with_the_reason_outside_ci_and_fails_under_ci(tmp_path: Path) -> None:
    test = tmp_path / "test_missing.py"
    test.write_text("from agents import require_cli\n\n\ndef test_it():\n    require_cli('claude')\n")
    # Not PYTEST_ADDOPTS: under .ci/run it names the outer run's JUnit report.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(RALPH_AGENTS_DIR=str(tmp_path / "none"), PATH="/usr/bin:/bin")
    env["PYTHONPATH"] = str(Path(__file__).parent)
    outcomes = {}
    for ci in ("", "true"):
        argv = [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", str(test)]
        result = subprocess.run(argv, env={**env, "CI": ci}, cwd=tmp_path, capture_output=True, text=True)
        assert "agent CLI 'claude' is not installed" in result.stdout, result.stdout
        assert "run `bash .ci/install-agents`" in result.stdout
        outcomes[ci] = (result.returncode, result.stdout.strip().splitlines()[-1])
    assert outcomes[""][0] == 0 and "1 skipped" in outcomes[""][1]
    assert outcomes["true"][0] == 1 and "1 failed" in outcomes["true"][1]


@pytest.mark.parametrize("name", ["claude", "codex", "gemini", "opencode"])
def test_cli_in_a_box_writes_a_file_runs_a_program_and_commits(name: str, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    script: list[Turn] = [
        [WriteFile(str(workspace / "hello.txt"), "hello from the model\n")],
        [Shell("python3 -c 'print(6 * 7)'")],
        [Shell("git add hello.txt && git commit -q -m 'Add hello' && git log -1 --format=%s")],
        Answer("All done."),
    ]
    result, server, _ = run_in_box(name, script, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert server.problems == []
    assert turn_requests(server) == 4
    assert (workspace / "hello.txt").read_text() == "hello from the model\n"
    results = server.tool_results()
    assert any(re.search(r"(?<!\d)42(?!\d)", text) for text in results), results
    assert git(workspace, "log", "-1", "--format=%s") == "Add hello"
    assert git(workspace, "status", "--porcelain") == ""
    check_usage(name, result.stdout, server)


def test_aider_in_a_box_writes_the_file_its_reply_names(tmp_path: Path) -> None:
    """aider offers the model no tools: it applies edits written in the reply (and runs no commands)."""
    workspace = tmp_path / "ws"
    result, server, _ = run_in_box(
        "aider", [[WriteFile(str(workspace / "hello.txt"), "hello from the model\n")]], tmp_path
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert (workspace / "hello.txt").read_text() == "hello from the model\n"
    assert "Applied edit to hello.txt" in result.stdout
    assert turn_requests(server) == 1


def test_codex_usage_limit_ends_the_run_at_once_naming_the_reset(tmp_path: Path) -> None:
    result, server, _ = run_in_box("codex", [Fail("usage_limit", times=None, reset_in=3600)], tmp_path)
    assert result.returncode == 1
    assert len(server.model_requests()) == 1
    events = json_lines(result.stdout)
    failed = events[-1]
    assert failed["type"] == "turn.failed"
    assert failed["error"]["message"].startswith("You’ve hit your usage limit.")
    # A clock time when the reset falls today (in the box's zone, UTC), else a date first.
    assert re.search(
        r"try again at ([A-Z][a-z]{2} \d{1,2}[a-z]{2}, \d{4} )?\d{1,2}:\d\d [AP]M\.$",
        failed["error"]["message"],
    )


def test_codex_insufficient_quota_ends_the_run_at_once(tmp_path: Path) -> None:
    result, server, _ = run_in_box("codex", [Fail("insufficient_quota", times=None)], tmp_path)
    assert result.returncode == 1
    assert len(server.model_requests()) == 1
    assert json_lines(result.stdout)[-1] == {
        "type": "turn.failed",
        "error": {"message": "Quota exceeded. Check your plan and billing details."},
    }


def test_gemini_daily_quota_ends_the_run_at_once(tmp_path: Path) -> None:
    result, server, _ = run_in_box("gemini", [Fail("usage_limit", times=None)], tmp_path)
    assert result.returncode == 429 % 256  # gemini exits with the HTTP status, truncated to a byte
    result_event = json_lines(result.stdout)[-1]
    assert result_event["type"] == "result" and result_event["status"] == "error"
    assert "You have exhausted your daily quota on this model." in result_event["error"]["message"]
    assert len(server.model_requests()) <= 2  # the router's request, then the turn's


def test_claude_with_an_api_key_reports_a_spend_limit_and_its_reset_at_once(tmp_path: Path) -> None:
    result, _, _ = run_in_box("claude", [Fail("spend_limit", times=None, reset_in=3600)], tmp_path)
    assert result.returncode == 1
    final = json_lines(result.stdout)[-1]
    assert final["type"] == "result" and final["is_error"] is True and final["api_error_status"] == 400
    assert re.fullmatch(
        r"API Error: 400 You have reached your specified API usage limits\. "
        r"You will regain access on \d{4}-\d\d-\d\d at \d\d:\d\d UTC\.",
        final["result"],
    )


def test_claude_on_a_plan_stops_at_its_usage_limit_at_once_with_the_reset_time(tmp_path: Path) -> None:
    """Logged in to a Claude plan (an OAuth token, not an API key), Claude Code reads the unified
    limiter's headers: no retry, a rate_limit_event with the reset epoch, a result naming the window."""
    oauth = {"ANTHROPIC_API_KEY": None, "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-scripted"}
    result, server, _ = run_in_box(
        "claude", [Fail("usage_limit", times=None, reset_in=7200)], tmp_path, env=oauth
    )
    assert result.returncode == 1
    assert len(server.model_requests()) == 1
    reset = int(server.requests[-1].at) + 7200
    events = json_lines(result.stdout)
    (limit,) = [e for e in events if e["type"] == "rate_limit_event"]
    info = limit["rate_limit_info"]
    assert (info["status"], info["rateLimitType"]) == ("rejected", "five_hour")
    assert abs(info["resetsAt"] - reset) <= 2
    final = events[-1]
    assert final["type"] == "result" and final["is_error"] is True and final["api_error_status"] == 429
    assert re.fullmatch(
        r"You've hit your 5-hour limit · resets \d{1,2}(:\d\d)?[ap]m \(UTC\)", final["result"]
    )
