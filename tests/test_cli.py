"""The command line as a whole: --version, --help, exit codes, the top-level error handler, -v/-q.

Per-command behaviour is in test_cli_init.py, test_cli_task.py, test_cli_queue.py and test_cli_status.py.
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import invoke, ralph

from ralph import __version__
from ralph.cli import cli

VERSION_LINE = f"ralph, version {__version__}\n"


@pytest.fixture
def not_a_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory that git must not find a repository above."""
    path = tmp_path / "plain"
    path.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    return path


# --- --version and --help ------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    result = invoke(flag)
    assert result.exit_code == 0
    assert result.stdout == VERSION_LINE
    assert result.stderr == ""


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of the real CLI, e.g. ("queue", "list")."""
    paths = []
    for name, command in sorted(group.commands.items()):
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths.extend(command_paths(command, (*prefix, name)))
    return paths


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def test_top_level_help_lists_every_command_and_global_option() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: ralph [OPTIONS] COMMAND [ARGS]...")
    options, commands = result.stdout.split("\nOptions:\n", 1)[1].split("\nCommands:\n", 1)
    # A command's line is indented by two; a wrapped description continues further in.
    listed = [line.split()[0] for line in commands.splitlines() if line[:3].strip() and line[:2] == "  "]
    assert sorted(listed) == sorted(cli.commands)
    for text in ("-C DIR", "--log-file PATH", "-v, --verbose", "-q, --quiet", "-V, --version", "-h, --help"):
        assert text in options, text
    for param in cli.params:
        for opt in param.opts:
            assert opt in options, opt
    assert invoke("-h").stdout == result.stdout


# What a command's help must say beyond its usage line and options (checked for every command below).
TEACHES: dict[tuple[str, ...], list[str]] = {
    ("init",): ["--runner [claude|codex|gemini|opencode|aider|command]", "--base BRANCH", "never overwrites"],
    ("task",): ["add"],
    ("task", "add"): ["TITLE", "--depends-on ID", "repeat", "--priority", "medium]", "--no-push"],
    ("queue",): ["list", "show", "validate", "explain"],
    ("queue", "list"): ["done archive", "queue order"],
    ("queue", "show"): ["ID", "done archive"],
    ("queue", "validate"): ["every problem", "exit 1"],
    ("queue", "explain"): ["can start now"],
    ("status",): ["README", "worker", "every host's claims"],
    ("run",): ["--workers N", "--max-tasks N", "Exits 75", "cron"],
    ("logs",): ["TASK", "CI log"],
    ("cancel",): ["TASK", "process group", "not retried", "no host starts TASK again", "any host"],
    ("retry",): ["TASK", "refs/ralph/attic/", "cleared for every host"],
    ("discard",): ["TASK", "refs/ralph/attic/", "rejected", "without landing", "any host"],
    ("demo",): ["sandbox", "scripted agent", "No model is called"],
    ("pause",): ["ralph resume", "in flight"],
    ("resume",): ["ralph pause"],
    ("doctor",): ["refs/ralph/doctor/", "cron's bare PATH", "Exits 1"],
}


def test_teaches_names_only_real_commands() -> None:
    assert set(TEACHES) <= set(command_paths())


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_help_exits_0_and_teaches(path: tuple[str, ...]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: ralph {' '.join(path)} ")
    # Help text wraps at the terminal width; compare with the wrapping undone.
    flat = " ".join(result.stdout.split())
    for param in command_at(path).params:
        names = param.opts if isinstance(param, click.Option) else [param.human_readable_name]
        for name in names:
            assert name in flat, name
    for text in TEACHES.get(path, []):
        assert text in flat, text


def test_priority_help_names_the_command_that_sorts_by_priority() -> None:
    # It once named `ralph queue sort` before ralph had it; now it has, and the help must say so.
    flat = " ".join(invoke("task", "add", "--help").stdout.split())
    assert "Queue order, not priority, decides what runs first; `ralph queue sort` orders by priority" in flat
    assert invoke("queue", "sort", "--help").exit_code == 0


def test_no_command_shows_usage() -> None:
    result = invoke()
    assert result.exit_code == 2
    assert "Commands:" in result.output


# --- the real entry points, in a subprocess ------------------------------------------------------


def test_python_dash_m_ralph_version() -> None:
    result = subprocess.run([sys.executable, "-m", "ralph", "--version"], capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, VERSION_LINE, "")


def test_python_dash_m_ralph_exit_code_and_one_line_error(not_a_repo: Path) -> None:
    # CliRunner catches SystemExit; only a real process shows main() hands the exit code to the shell.
    result = subprocess.run(
        [sys.executable, "-m", "ralph", "-C", str(not_a_repo), "status"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"ralph: error: {not_a_repo} is not inside a git repository; "
        "run ralph in your checkout or pass -C <checkout>\n"
    )


def test_installed_entry_point(control: Path) -> None:
    script = Path(sys.executable).parent / "ralph"
    if not script.exists():
        pytest.skip("ralph is not installed as a console script next to this python")
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert (version.returncode, version.stdout) == (0, VERSION_LINE)
    status = subprocess.run(
        [str(script), "-C", str(control), "status", "--json"], capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert (doc["schema"], doc["state_exists"], doc["workers"]) == (1, False, [])


# --- the top-level error handler -----------------------------------------------------------------


def test_ralph_error_is_one_line_on_stderr_and_exit_1(not_a_repo: Path) -> None:
    result = ralph(not_a_repo, "queue", "list")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"ralph: error: {not_a_repo} is not inside a git repository; "
        "run ralph in your checkout or pass -C <checkout>\n"
    )
    assert "Traceback" not in result.output


def test_dash_c_to_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    # It used to reach git, whose failure to chdir escaped as an sh exception: exit 3, "a bug".
    missing = tmp_path / "missing"
    result = ralph(missing, "status")
    assert result.exit_code == 2
    assert f"Directory '{missing}' does not exist." in result.stderr
    assert "Traceback" not in result.output


def test_dash_c_to_a_file_is_a_usage_error(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    result = ralph(file, "status")
    assert result.exit_code == 2
    assert f"Directory '{file}' is a file." in result.stderr


def _cli_with(command: click.Command) -> click.Group:
    """A copy of the real group (same class, same handler) with one extra test-only command."""
    group = copy.copy(cli)
    group.commands = {**cli.commands, command.name or "": command}
    return group


def test_an_unexpected_exception_is_a_bug_exit_3_with_the_traceback_logged() -> None:
    def explode() -> None:
        raise RuntimeError("the widget\nfell over")

    group = _cli_with(click.Command("explode", callback=explode))
    result = CliRunner().invoke(group, ["explode"])
    assert result.exit_code == 3
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "ralph: error: a bug in ralph; the traceback, for the report:"
    assert "Traceback (most recent call last):" in result.stderr
    assert 'raise RuntimeError("the widget\\nfell over")' in result.stderr
    # The last line is one line even though the exception's message has two.
    assert lines[-1] == (
        "ralph: internal error (a bug in ralph): RuntimeError: the widget fell over; "
        "please report it with the traceback"
    )


def test_keyboard_interrupt_exits_130() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    result = CliRunner().invoke(_cli_with(click.Command("wait", callback=interrupted)), ["wait"])
    assert (result.exit_code, result.stderr) == (130, "ralph: interrupted\n")


# --- -v and -q -----------------------------------------------------------------------------------

V3_STATE = {
    "schema_version": 3,
    "target_branch": "main",
    "started_at": "2026-01-01T00:00:00Z",
    "workers": [
        {
            "task_id": "RQ-0001",
            "lifecycle": "completed",
            "workspace_path": "/tmp/ws/RQ-0001",
            "started_at": "2026-01-01T00:00:00Z",
            "completed_at": "2026-01-01T00:10:00Z",
        }
    ],
}


@pytest.fixture
def v3_state(control: Path) -> Path:
    """A state file from the Rust ralph: reading it migrates it in memory, which is logged at INFO."""
    path = control / ".ralph" / "cache" / "parallel" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(V3_STATE))
    return path


MIGRATED = "state.json: migrated schema_version 3 to 5\n"


def test_info_lines_show_by_default(control: Path, v3_state: Path) -> None:
    result = ralph(control, "status")
    assert result.exit_code == 0, result.output
    assert result.stderr == MIGRATED
    assert "RQ-0001  completed" in result.stdout


def test_dash_q_hides_info_lines(control: Path, v3_state: Path) -> None:
    result = ralph(control, "-q", "status")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert "RQ-0001  completed" in result.stdout


def test_json_is_quiet_like_dash_q(control: Path, v3_state: Path) -> None:
    # Style rule 13: --json forces quiet; the INFO line used to reach stderr.
    result = ralph(control, "status", "--json")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert [w["task_id"] for w in json.loads(result.stdout)["workers"]] == ["RQ-0001"]


def test_dash_v_shows_debug_lines(control: Path, v3_state: Path) -> None:
    quiet = ralph(control, "status")
    verbose = ralph(control, "-v", "status")
    assert verbose.exit_code == 0
    assert MIGRATED in verbose.stderr
    # At DEBUG the sh library's log of each git command is shown; at INFO it is not.
    assert "rev-parse --show-toplevel" in verbose.stderr
    assert "rev-parse" not in quiet.stderr


def test_warnings_show_under_dash_q_and_hide_under_dash_qq(control: Path) -> None:
    assert ralph(control, "init").exit_code == 0
    warning = (
        "ralph: warning: .ralph/config.toml already exists, so --runner/--base were not applied; "
        "edit the file to change them\n"
    )
    assert ralph(control, "-q", "init", "--runner", "codex").stderr == warning
    assert ralph(control, "-qq", "init", "--runner", "codex").stderr == ""


def test_log_lines_after_a_command_go_to_the_current_stderr(
    control: Path, v3_state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The console handler used to keep the stream of set-up time: here CliRunner's, gone after the
    # command, so later log lines vanished (or hit a closed file) instead of reaching stderr.
    assert ralph(control, "status").exit_code == 0
    logging.getLogger("ralph.test").warning("after the command")
    assert capsys.readouterr().err == "ralph: warning: after the command\n"
