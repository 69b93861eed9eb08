"""Bounded input: no file ralph reads can crash it by nesting, no option takes an absurd number, a
--log-file that cannot be opened says so, and text from files and tasks is shown, never obeyed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import Project, install_declining_hook
from helpers import ralph

from ralph import health, job, markers
from ralph.clock import format_z
from ralph.home import point_at_endpoint
from ralph.nesting import TooDeep, check_depth, loads_json
from ralph.pause import read_pause
from ralph.state import Lifecycle

DEEP_JSON = "[" * 100_000 + "]" * 100_000
ESC = "\x1b[2J\x1b]0;owned\x07"  # clear the screen, retitle the terminal


def ralph_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ralph", *args], capture_output=True, text=True, timeout=120)


# --- nesting ----------------------------------------------------------------------------------------


def test_loads_json_refuses_deep_nesting_as_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested more than 64 levels deep"):
        loads_json(DEEP_JSON)
    assert loads_json('{"a": "[[[[[[", "b": [[1]]}') == {"a": "[[[[[[", "b": [[1]]}
    assert loads_json(b'{"x": 1}') == {"x": 1}


def test_loads_json_reads_the_depth_off_what_it_parsed() -> None:
    """The parse comes first; the limit is the scan's, to the level, with the line of the first level
    too many, and a text both too deep and broken is named too deep, as when the scan came first."""
    within = '{"a": 1,\n "b": ' + "[" * 63 + "]" * 63 + "}"  # 64 levels with the object
    assert loads_json(within)["a"] == 1
    assert loads_json('"just a string"') == "just a string"
    assert loads_json("[]") == []
    beyond = '{"a": 1,\n "b": ' + "[" * 64 + "]" * 64 + "}"
    with pytest.raises(TooDeep) as e:
        loads_json(beyond)
    assert e.value.line == 2
    with pytest.raises(TooDeep):
        loads_json(beyond[:-1] + ",}")  # trailing comma: not JSON, and too deep first
    with pytest.raises(json.JSONDecodeError):
        loads_json(within[:-1] + ",}")
    with pytest.raises(TooDeep):
        loads_json(b"[" * 5_000 + b"]" * 5_000)  # deeper than json's own recursion: never RecursionError


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('{"a": "[[[[[[[[", "b": /* {{{{{{ */ 1, // [[[[[[\n "c": [[[1]]]}', None),  # strings, comments
        ('{"a": "\\"[[[[[[[[", "b": 1}', None),  # an escaped quote does not end the string
        ('{\n"a": "[\n [[[[\n', 3),  # a line break ends a broken string: what follows counts
        ('"unclosed \\', None),  # a backslash at the very end
        ('{"x": "y",\n\n  "z": [[[[1]]]]}', 3),  # the line where the limit is passed
    ],
)
def test_json_depth_is_counted_outside_strings_and_comments(text: str, line: int | None) -> None:
    if line is None:
        check_depth(text, limit=4)
    else:
        with pytest.raises(TooDeep) as e:
            check_depth(text, limit=4)
        assert e.value.line == line


def test_a_large_queue_is_checked_whole() -> None:
    """Ten thousand tasks of brackets in strings, then one level too many at the very end."""
    task = '{"id": "RQ-%05d", "title": "a [b] {c} \\" [[", "deps": ["x"]}'
    tasks = ",".join(task.replace("%05d", f"{n:05d}") for n in range(10_000))
    check_depth('{"tasks": [' + tasks + "]}", limit=4)
    with pytest.raises(TooDeep):
        check_depth('{"tasks": [' + tasks + ", [[[1]]]]}", limit=4)


def test_a_deeply_nested_marker_an_agent_left_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / markers.BLOCKED_PUSH
    path.parent.mkdir(parents=True)
    path.write_text(DEEP_JSON)
    assert markers.read_blocked_push(tmp_path) is None


def test_a_deeply_nested_job_result_is_no_result(tmp_path: Path) -> None:
    path = tmp_path / "gate-1.result.json"
    path.write_text(DEEP_JSON)
    assert job.read_result(path) is None
    path.write_text(" " * (job.MAX_RESULT_BYTES + 1))
    assert job.read_result(path) is None


def test_deeply_nested_settings_of_an_agent_cli_are_replaced(tmp_path: Path) -> None:
    gemini = tmp_path / ".gemini" / "settings.json"
    gemini.parent.mkdir()
    gemini.write_text(DEEP_JSON)
    point_at_endpoint(tmp_path, runner="gemini", base_url="", key_name="", key=None, model="")
    assert json.loads(gemini.read_text())["security"]["auth"]["selectedType"] == "gemini-api-key"
    codex = tmp_path / ".codex" / "config.toml"
    codex.parent.mkdir()
    codex.write_text("a = " + "[" * 50_000 + "]" * 50_000 + "\n")
    point_at_endpoint(
        tmp_path, runner="codex", base_url="http://127.0.0.1:1", key_name="", key=None, model=""
    )
    assert 'model_provider = "ralph"' in codex.read_text()


def test_deeply_nested_files_of_a_checkout_do_not_stop_status_history_or_doctor(project: Project) -> None:
    paths = project.paths
    project.tick()  # the files exist as a tick leaves them
    paths.events.write_text(
        '{"at": "2026-11-21T10:00:00+00:00", "task_id": "RQ-0001", "event": "running", "attempt": 1, '
        '"detail": "started"}\n' + DEEP_JSON + "\n"
    )
    paths.pause.write_text(DEEP_JSON)
    health.ticks_file(project.control).write_text(DEEP_JSON)
    status = ralph(project.control, "status")
    assert "Traceback" not in status.output and status.exit_code in (0, 1), status.output
    assert "PAUSED since ? by ?: (unreadable pause file)" in status.stdout
    history = ralph(project.control, "history", "--since", "all")
    assert history.exit_code == 0, history.output
    paths.state.write_text(DEEP_JSON)
    doctor = ralph(project.control, "doctor")
    assert doctor.exit_code == 1, doctor.output
    assert "Traceback" not in doctor.output
    assert any(line.startswith("FAIL  state.json") for line in doctor.stdout.splitlines()), doctor.stdout


# --- numbers on the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--workers", "1000000"],
        ["run", "--workers", "257"],
        ["run", "--max-tasks", "1000000000"],
        ["demo", "--workers", "100000"],
        ["history", "--since", "9999-12-31T23:59:59-23:59"],
        ["stats", "--since", "0001-01-01T00:00:00+23:59"],
        ["history", "--since", "1" * 5000 + "d"],
        ["pause", "--reason", "x" * 501],
        ["task", "done", "RQ-0001", "--note", "x" * 2001],
    ],
    ids=lambda a: " ".join(x[:20] for x in a),
)
def test_an_absurd_number_or_length_is_a_usage_error(project: Project, args: list[str]) -> None:
    result = ralph_process("-C", str(project.control), *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error = result.stderr.splitlines()[-1]
    assert error.startswith("Error: Invalid value for"), result.stderr
    assert len(error) < 300


def test_the_bounds_still_allow_the_largest_value(project: Project) -> None:
    result = ralph(project.control, "run", "--dry-run", "--workers", "256", "--max-tasks", "10000")
    assert result.exit_code == 0, result.output


# --- --log-file -------------------------------------------------------------------------------------------


def test_a_log_file_in_a_missing_directory_is_an_error(project: Project, tmp_path: Path) -> None:
    log = tmp_path / "no-such-dir" / "ralph.log"
    result = ralph_process("--log-file", str(log), "-C", str(project.control), "run", "--allow-root")
    assert result.returncode == 1
    assert result.stderr == (
        f"ralph: error: --log-file {log}: its directory {log.parent} does not exist; "
        "create it (mkdir -p) or give another path\n"
    )
    assert not log.parent.exists()
    assert project.state().workers == []  # the tick did not run


def test_a_log_file_that_cannot_be_opened_is_an_error(project: Project) -> None:
    result = ralph_process("--log-file", "/proc/version", "-C", str(project.control), "status")
    assert result.returncode == 1
    assert result.stderr.startswith("ralph: error: --log-file /proc/version: cannot open it for appending (")
    assert len(result.stderr.splitlines()) == 1


# --- text from files and tasks is shown, never obeyed ------------------------------------------------

FAKE_LINE = "2026-11-21T10:00:00+0000 INFO RQ-9999 landed 0123456789 on main"


def test_a_title_cannot_fake_a_log_line(project: Project, tmp_path: Path) -> None:
    project.add(f"Feature\n{FAKE_LINE}{ESC}")
    log = tmp_path / "ralph.log"
    result = ralph_process("--log-file", str(log), "-C", str(project.control), "run", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert [line for line in lines if "would start" in line] == [lines[0]], lines  # one record, one line
    assert not any(line.startswith("2026-11-21T10:00:00+0000") for line in lines)
    assert "\x1b" not in log.read_text()
    assert f"would start: Feature\\n{FAKE_LINE}\\e[2J\\e]0;owned\\x07" in lines[0]
    console = ralph_process("-C", str(project.control), "run", "--dry-run")
    assert "\x1b" not in console.stderr and "\x1b" not in console.stdout
    assert len([line for line in console.stderr.splitlines() if "would start" in line]) == 1


def test_queue_show_escapes_and_indents_what_the_task_holds(project: Project) -> None:
    task = project.add(f"Title{ESC}", description=f"first line\nstatus: done\n{ESC}")
    result = ralph(project.control, "queue", "show", task)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    lines = result.stdout.splitlines()
    assert "title:            Title\\e[2J\\e]0;owned\\x07" in lines
    at = lines.index("description:      first line")
    assert lines[at + 1 : at + 3] == [" " * 18 + "status: done", " " * 18 + "\\e[2J\\e]0;owned\\x07"]
    # No line of the description can pass for one of the fields.
    assert not any(line.startswith("status: done") for line in lines)


def test_a_pause_reason_is_shown_escaped(project: Project) -> None:
    paused = ralph(project.control, "pause", "--reason", f"deploy\n{ESC}")
    assert paused.exit_code == 0, paused.output
    assert "\x1b" not in paused.stdout and len(paused.stdout.splitlines()) == 1
    assert "deploy \\e[2J\\e]0;owned\\x07" in paused.stdout
    status = ralph(project.control, "status")
    assert "\x1b" not in status.stdout
    assert "deploy \\e[2J\\e]0;owned\\x07" in status.stdout
    assert read_pause(project.paths.pause) is not None


def test_an_error_quoting_a_file_or_a_path_is_one_escaped_line(project: Project, tmp_path: Path) -> None:
    (project.control / ".ralph" / "config.toml").write_text(f'[git]\nbase_branch = "main{ESC}\n')
    result = ralph_process("-C", str(project.control), "status")
    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("ralph: error: ")
    elsewhere = tmp_path / f"not-a-checkout{ESC}\nralph: fake line"
    elsewhere.mkdir()
    result = ralph_process("-C", str(elsewhere), "status")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("ralph: error: ") and len(result.stderr.splitlines()) == 1, result.stderr
    assert "not-a-checkout\\e[2J\\e]0;owned\\x07" in result.stderr


def test_doctor_escapes_what_it_quotes(project: Project) -> None:
    # The gate's #! line names an interpreter doctor quotes; the file is the repository's.
    gate = project.control / "gate.sh"
    gate.write_text(f"#!/no/such/shell{ESC}\nexit 0\n")
    gate.chmod(0o755)
    project.configure(ci={"command": ["./gate.sh"]})
    # So is the record of the last ticks' ends, whose errors doctor quotes too.
    now = datetime.now(UTC)
    ends = [
        {"at": format_z(now - timedelta(minutes=n)), "exit_code": 1, "seconds": 1, "error": f"boom{ESC}"}
        for n in (3, 2, 1)
    ]
    health.ticks_file(project.control).parent.mkdir(parents=True, exist_ok=True)
    health.ticks_file(project.control).write_text(json.dumps({"ticks": ends}))
    result = ralph(project.control, "doctor")
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout, result.stdout
    assert "/no/such/shell\\e[2J\\e]0;owned\\x07" in result.stdout, result.stdout
    assert "boom\\e[2J\\e]0;owned\\x07" in result.stdout, result.stdout


def test_the_wrapper_escapes_what_its_log_lines_quote(tmp_path: Path) -> None:
    """The lines `ralph logs` shows around a job's own output quote its argv and directory."""
    cwd = tmp_path / f"dir{ESC}"
    cwd.mkdir()
    spec = job.JobSpec(
        task_id="RQ-0001",
        kind="agent",
        argv=["true"],
        cwd=str(cwd),
        env={"PATH": "/usr/bin:/bin"},
        log_path=str(tmp_path / "agent.log"),
        result_path=str(tmp_path / "a.result.json"),
        timeout_s=10,
        grace_s=1,
        created_at="2026-11-21T10:00:00Z",
    )
    started = job.start(spec, tmp_path / "a.spec.json")
    assert started.confirm()
    started._process.wait(timeout=30)
    log = (tmp_path / "agent.log").read_text()
    assert "[ralph.job " in log and "\x1b" not in log and "dir\\e[2J" in log


def test_status_escapes_every_field_of_a_marker_in_a_workspace(project: Project) -> None:
    """A workspace is the agent's: any field of its markers may hold an escape sequence."""
    project.add("Feature")
    install_declining_hook(project.origin, "frozen")
    state = project.run_until(lambda s: bool(s.workers) and s.workers[0].lifecycle is Lifecycle.BLOCKED_PUSH)
    marker = Path(state.workers[0].workspace_path) / markers.BLOCKED_PUSH
    raw = json.loads(marker.read_text())
    marker.write_text(json.dumps({**raw, "attempt": ESC, "max_attempts": ESC}))
    result = ralph(project.control, "status")
    assert "push blocked (\\e[2J" in result.stdout, result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
