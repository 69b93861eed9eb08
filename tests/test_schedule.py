"""Running unattended: pause and resume, bounded logs, --log-file, quiet no-op ticks, logs --follow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness import Project, all_landed, make_project
from helpers import ralph

from ralph.files import copy_truncate, rotate
from ralph.state import Lifecycle


def test_a_paused_tick_starts_nothing_but_still_reaps_and_lands(project: Project) -> None:
    first = project.add("In flight")
    project.tick()  # first is running
    second = project.add("Waits for resume")
    result = ralph(project.control, "pause", "--reason", "deploy freeze")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("paused since ")
    assert "deploy freeze" in result.stdout
    state = project.run_until(
        lambda s: s.worker(first) is not None and s.worker(first).lifecycle is Lifecycle.COMPLETED
    )  # type: ignore[union-attr]
    assert state.worker(second) is None  # nothing new started while paused
    status = ralph(project.control, "status", "--json")
    paused = json.loads(status.stdout)["paused"]
    assert paused["reason"] == "deploy freeze" and paused["since"].endswith("Z")
    text = ralph(project.control, "status").stdout
    assert "PAUSED since" in text and "deploy freeze" in text
    resumed = ralph(project.control, "resume")
    assert resumed.stdout == "resumed: the next tick starts new tasks again\n"
    project.run_until(all_landed(2))
    again = ralph(project.control, "resume")
    assert again.stdout == "not paused: nothing to resume\n"


def test_a_tick_with_nothing_to_do_writes_nothing(project: Project) -> None:
    project.tick()  # the first tick records that ticks run
    state_file = project.paths.state
    before = (state_file.stat().st_ino, state_file.stat().st_mtime_ns, state_file.read_bytes())
    for _ in range(3):
        project.tick()
    after = (state_file.stat().st_ino, state_file.stat().st_mtime_ns, state_file.read_bytes())
    assert after == before


def test_log_file_option_writes_timestamped_lines_there(project: Project, tmp_path: Path) -> None:
    project.add("One")
    log = tmp_path / "logs" / "ralph.log"
    log.parent.mkdir()  # ralph makes no directory for it (test_cli: a missing one is an error)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ralph",
            "--log-file",
            str(log),
            "-C",
            str(project.control),
            "run",
            "--allow-root",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    stamp, level, message = lines[0].split(" ", 2)
    assert stamp[:4].isdigit() and level == "INFO"
    assert message.startswith("RQ-0001 attempt 1/3 on ") and message.endswith(")")
    # logrotate moves the file away; the next run writes a new one instead of into the moved one.
    log.rename(log.with_name("ralph.log.1"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ralph",
            "--log-file",
            str(log),
            "-C",
            str(project.control),
            "run",
            "--allow-root",
        ],
        check=True,
    )
    assert log.exists()


def test_rotate_keeps_one_older_copy(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    log.write_bytes(b"x" * 100)
    assert rotate(log, 200) is False and log.read_bytes() == b"x" * 100
    assert rotate(log, 50) is True
    assert not log.exists() and (tmp_path / "agent.log.1").read_bytes() == b"x" * 100
    log.write_bytes(b"y" * 100)
    assert rotate(log, 50) is True
    assert (tmp_path / "agent.log.1").read_bytes() == b"y" * 100  # the older copy is replaced, not piled up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.log.1"]


def test_copy_truncate_lets_an_appending_writer_go_on(tmp_path: Path) -> None:
    log = tmp_path / "ci.log"
    with open(log, "ab") as writer:  # as a job's stdout: O_APPEND
        writer.write(b"a" * 100)
        writer.flush()
        assert copy_truncate(log, 50) is True
        writer.write(b"after\n")
        writer.flush()
        assert log.read_bytes() == b"after\n"  # written at the new end, not after a hole
        assert (tmp_path / "ci.log.1").read_bytes() == b"a" * 100


def test_a_tick_bounds_the_logs_it_keeps(project: Project) -> None:
    project.configure(parallel={"log_max_bytes": 64 * 1024}, agent={"max_attempts": 1})
    task = project.add("Chatty", description="scripted-agent: sleep 3")
    events = project.paths.events
    events.parent.mkdir(parents=True, exist_ok=True)
    events.write_text("{}\n" * 30_000)  # 90 KB of old events
    project.tick()
    assert (events.with_name("events.jsonl.1")).stat().st_size == 90_000
    assert events.stat().st_size < 2_000  # only this tick's lines
    agent_log = project.paths.run_dir(task) / "agent.log"
    with open(agent_log, "ab") as f:  # the agent is chatty: its log passes the limit while it runs
        f.write(b"noise\n" * 20_000)
    project.tick()
    assert (agent_log.with_name("agent.log.1")).stat().st_size > 100_000
    assert agent_log.stat().st_size < 64 * 1024
    project.wait_for_jobs()
    project.tick()
    assert "finished agent for" in agent_log.read_text()  # the job kept writing to the same file


def test_logs_follow_prints_until_the_job_ends(project: Project) -> None:
    task = project.add("Slow", description="scripted-agent: sleep 2")
    project.tick()
    done = subprocess.run(
        [sys.executable, "-m", "ralph", "-C", str(project.control), "logs", task, "--follow"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("[ralph.job ") and f"started agent for {task}" in lines[0]
    assert f"finished agent for {task}: exit 0" in lines[-1]  # it waited for the end


def test_pause_file_written_by_hand_still_pauses(project: Project) -> None:
    project.add("Anything")
    project.paths.pause.parent.mkdir(parents=True, exist_ok=True)
    project.paths.pause.write_text("")  # `touch paused`
    project.tick()
    assert project.state().workers == []


def test_the_documented_cron_line_ticks_in_crons_bare_environment(origin: Path, tmp_path: Path) -> None:
    """contrib/cron/ralph.crontab's PATH and command line, run the way cron runs them: `env -i`."""
    crontab = (Path(__file__).resolve().parent.parent / "contrib" / "cron" / "ralph.crontab").read_text()
    path_line = next(line for line in crontab.splitlines() if line.startswith("PATH="))
    entry = next(line for line in crontab.splitlines() if line.startswith("* * * * *"))
    command = entry.split(None, 5)[5]
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    # As `pipx install ralph` would: ralph in ~/.local/bin, which only the crontab's PATH line names.
    (home / ".local" / "bin" / "ralph").symlink_to(Path(sys.executable).with_name("ralph"))
    (home / ".gitconfig").write_text("[user]\n\tname = Cron\n\temail = cron@example.com\n")
    checkout = home / "src" / "app"
    subprocess.run(["git", "clone", "-q", str(origin), str(checkout)], check=True)
    project = make_project(origin, checkout)
    task = project.add("Ticked by cron")
    if os.geteuid() == 0:  # this sandbox runs as root; a real crontab belongs to a user and needs no flag
        command = command.replace(" run ", " run --allow-root ")
    env = {
        "SHELL": "/bin/sh",
        "HOME": str(home),
        "LOGNAME": "me",
        "PATH": path_line[5:].replace("/home/me", str(home)),
    }
    for _ in range(40):
        done = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c", command])
        assert done.returncode == 0
        state = project.state()
        if state.workers and state.workers[0].lifecycle is Lifecycle.COMPLETED:
            break
        time.sleep(0.5)
    assert project.worker(task).lifecycle is Lifecycle.COMPLETED
    log = (checkout / ".ralph" / "cache" / "ralph.log").read_text()
    assert f"INFO {task} landed " in log
    assert "error" not in log.lower()


def test_with_a_log_file_an_error_is_written_there_too(project: Project, tmp_path: Path) -> None:
    log = tmp_path / "ralph.log"
    (project.control / ".ralph" / "queue.json").write_text("{ broken")
    project.commit_and_push("break the queue")
    tick = [sys.executable, "-m", "ralph", "--log-file", str(log), "-C", str(project.control), "run"]
    result = subprocess.run([*tick, "--allow-root"], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("ralph: error: origin/main:.ralph/queue.json: not valid JSON")
    line = log.read_text().splitlines()[-1]
    assert " ERROR origin/main:.ralph/queue.json: not valid JSON" in line
