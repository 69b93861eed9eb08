"""Tick health: the ring file every `ralph run` writes, how it is judged, and hooks.on_event hearing
of it once. Real ticks run as `python -m ralph run` processes; the judging is tested on recorded ends."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import Project, wait_until
from helpers import executable, hold_lock, ralph, stop

from ralph import health, ring
from ralph.commands.doctor import doctor
from ralph.errors import ConfigError, ExitCode, LockBusy
from ralph.git import Git
from ralph.health import (
    ALERT_AFTER,
    RING_SIZE,
    Holder,
    Remembered,
    TickEnd,
    assess,
    read_ring,
    record,
    ticks_file,
)
from ralph.ring import HUNG_BUDGETS

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def ok(minute: int) -> TickEnd:
    return TickEnd(at=T0 + timedelta(minutes=minute), exit_code=0, seconds=1.5)


def failed(minute: int, error: str = "origin has no branch 'main'") -> TickEnd:
    return TickEnd(at=T0 + timedelta(minutes=minute), exit_code=1, error=error)


def locked(minute: int, holder: Holder) -> TickEnd:
    return TickEnd(
        at=T0 + timedelta(minutes=minute), exit_code=75, error="another ralph tick holds", holder=holder
    )


# --- judging recorded ticks ---------------------------------------------------------------------------


def test_no_tick_recorded_is_unknown_and_not_a_problem() -> None:
    found = assess([])
    assert (found.verdict, found.ok, found.problem, found.last) == ("unknown", True, None, None)


def test_a_success_after_failures_is_healthy() -> None:
    found = assess([failed(0), failed(1), ok(2)])
    assert (found.verdict, found.ok, found.streak, found.problem) == ("ok", True, 0, None)
    assert found.last == ok(2)


def test_failures_in_a_row_are_counted_and_the_newest_error_shown() -> None:
    found = assess([ok(0), failed(1, "first"), failed(2, "second"), failed(3, "config invalid: x")])
    assert (found.verdict, found.ok, found.streak) == ("failing", False, 3)
    assert found.problem == "the last 3 ticks failed: config invalid: x"
    assert found.since == T0 + timedelta(minutes=1)
    assert found.alarming


def test_one_failure_is_shown_but_not_yet_alarming() -> None:
    found = assess([ok(0), failed(1)])
    assert found.problem == "the last tick failed: origin has no branch 'main'"
    assert not found.ok and not found.alarming
    assert ALERT_AFTER == 3


def test_exit_75_counts_neither_way() -> None:
    holder = Holder(4242, T0 + timedelta(minutes=2))
    found = assess([ok(0), failed(1), locked(2, holder), failed(3), locked(4, holder)])
    assert (found.verdict, found.streak) == ("failing", 2)
    assert found.last is not None and found.last.exit_code == 75
    assert assess([ok(0), locked(1, holder)]).verdict == "ok"


def test_a_lock_held_for_more_than_a_few_tick_budgets_is_a_hung_tick() -> None:
    holder = Holder(4242, T0)
    budget = 45.0
    minutes_hung = HUNG_BUDGETS * budget / 60  # 3.75
    early = assess([ok(0), locked(1, holder), locked(3, holder)], tick_budget_s=budget)
    assert early.verdict == "ok"  # a slow tick, not yet a hung one
    late = [locked(m, holder) for m in range(1, 7)]
    found = assess([ok(0), *late], tick_budget_s=budget)
    assert found.verdict == "hung" and found.alarming and not found.ok
    assert found.streak == 6
    assert found.since == T0
    assert found.problem is not None and found.problem.startswith(
        "the last 6 ticks found the lock held by pid 4242 since 2026-11-21T10:00:00Z"
    )
    # A new holder each time is ticks taking turns, not one hung tick.
    turns = [locked(m, Holder(100 + m, T0 + timedelta(minutes=m))) for m in range(1, 7)]
    assert assess(turns, tick_budget_s=budget).verdict == "ok"
    assert minutes_hung < 6


def test_ticks_that_could_not_reach_the_remote_are_offline_even_with_exit_0() -> None:
    reached = TickEnd(at=T0, exit_code=0)
    offline = [
        TickEnd(at=T0 + timedelta(minutes=m), exit_code=0, remote_error="could not resolve host: git.example")
        for m in (1, 2)
    ]
    found = assess([reached, *offline])
    assert (found.verdict, found.streak) == ("offline", 2)
    assert found.problem == "the last 2 ticks could not reach the remote: could not resolve host: git.example"


def test_a_streak_that_fills_the_ring_says_so() -> None:
    found = assess([failed(m) for m in range(RING_SIZE)])
    assert found.capped and found.problem is not None
    assert found.problem.startswith(f"the last {RING_SIZE}+ ticks failed")


# --- the ring file -------------------------------------------------------------------------------------


def test_record_keeps_the_last_ticks_and_remembers_the_config(tmp_path: Path) -> None:
    (tmp_path / ".ralph").mkdir()
    remembered = Remembered(
        on_event=("notify", "--x"), hook_timeout_s=20, base_branch="trunk", tick_budget_s=30
    )
    for minute in range(RING_SIZE + 5):
        record(tmp_path, ok(minute), remembered if minute == 0 else None)
    ring = read_ring(ticks_file(tmp_path))
    assert len(ring.ticks) == RING_SIZE
    assert ring.ticks[0] == ok(5) and ring.ticks[-1] == ok(RING_SIZE + 4)
    # A tick that could not read the config (None) keeps what an earlier one remembered.
    assert ring.remembered == remembered
    raw = json.loads(ticks_file(tmp_path).read_text())
    assert raw["version"] == 1 and raw["alerted"] is None


def test_record_announces_failing_once_and_recovering_once(tmp_path: Path) -> None:
    changes = [record(tmp_path, t) for t in [ok(0), *(failed(m) for m in range(1, 8)), ok(8), ok(9)]]
    events = [(n, c.event) for n, c in enumerate(changes) if c is not None]
    assert events == [(ALERT_AFTER, "ticks_failing"), (8, "ticks_recovered")]
    failing = changes[ALERT_AFTER]
    assert failing is not None and failing.reason == "the last 3 ticks failed: origin has no branch 'main'"
    recovered = changes[8]
    assert recovered is not None and recovered.reason.startswith("ticks run again; before: the last 3 ticks")


def test_an_unreadable_ring_file_starts_afresh(tmp_path: Path) -> None:
    path = ticks_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{ torn")
    assert read_ring(path).ticks == []
    record(tmp_path, ok(0))
    assert read_ring(path).ticks == [ok(0)]
    path.write_text('{"ticks": [{"at": "yesterday"}, 7, {"at": "2026-11-21T10:00:00Z", "exit_code": 1}]}')
    assert read_ring(path).ticks == [TickEnd(at=T0, exit_code=1)]


def test_the_lock_holder_as_the_lock_file_names_it(tmp_path: Path) -> None:
    lock = tmp_path / "state.json.lock"
    assert health.read_lock_holder(lock) is None
    lock.write_text("pid 4242 since 2026-11-21T10:00:00Z\n")
    assert health.read_lock_holder(lock) == Holder(4242, T0)
    lock.write_text("garbage")
    assert health.read_lock_holder(lock) is None


def test_an_early_end_is_appended_quietly_only_when_it_cannot_change_the_verdict(tmp_path: Path) -> None:
    """ralph.ring adds the ends of idle and locked-out ticks without ralph.health, unless an alert
    stands (the end may be the recovery hooks must hear of) or the holder looks hung."""
    root = str(tmp_path)
    now = T0.timestamp()
    assert not ring.append_quiet(root, code=0, error=None, seconds=0.02, now=now)  # no ring yet
    record(tmp_path, ok(0), Remembered(tick_budget_s=30))
    assert ring.append_quiet(root, code=0, error=None, seconds=0.02, now=now + 60)
    ticks_ = read_ring(ticks_file(tmp_path)).ticks
    assert ticks_[-1] == TickEnd(at=T0 + timedelta(minutes=1), exit_code=0, seconds=0.02)
    # A holder of the lock for less than HUNG_BUDGETS budgets: a plain lock-out, appended.
    lock = health.tick_lock_file(tmp_path)
    lock.write_text("pid 4242 since 2026-11-21T10:01:00Z\n")
    later = now + 60 + HUNG_BUDGETS * 30 - 2
    assert ring.append_quiet(root, code=75, error="another tick\nholds it", seconds=0.01, now=later)
    end = read_ring(ticks_file(tmp_path)).ticks[-1]
    assert (end.exit_code, end.error, end.holder) == (
        75,
        "another tick holds it",
        Holder(4242, T0 + timedelta(minutes=1)),
    )
    assert health.load(tmp_path).verdict == "ok"  # judged with the budget the ring remembers (30 s)
    # Held for longer: ralph.health must judge it (hung), so nothing is written here.
    before = ticks_file(tmp_path).read_bytes()
    assert not ring.append_quiet(root, code=75, error="held", seconds=0.01, now=later + 5)
    assert ticks_file(tmp_path).read_bytes() == before
    # An alert standing: declined too, whatever the end.
    for minute in range(1, ALERT_AFTER + 1):
        record(tmp_path, failed(minute))
    assert json.loads(ticks_file(tmp_path).read_text())["alerted"] is not None
    before = ticks_file(tmp_path).read_bytes()
    assert not ring.append_quiet(root, code=0, error=None, seconds=0.02, now=later + 60)
    assert ticks_file(tmp_path).read_bytes() == before
    # A torn ring file: declined (ralph.health starts it afresh).
    ticks_file(tmp_path).write_text("{ torn")
    assert not ring.append_quiet(root, code=0, error=None, seconds=0.02, now=later + 120)


# --- recording a tick, however it ends ---------------------------------------------------------------


def recorded(start: Path, error: BaseException | None = None, **kwargs: Any) -> list[Any]:
    """Run `recording` around a body that raises `error`; return what announce heard."""
    heard: list[Any] = []
    facts = kwargs.pop("facts", lambda root: None)
    recording = health.recording(start, facts=facts, announce=lambda root, change: heard.append(change))
    with pytest.raises(type(error)) if error else _nothing(), recording:
        if error is not None:
            raise error
    return heard


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_recording_a_ralph_error_a_bug_and_success(control: Path) -> None:
    (control / ".ralph").mkdir()
    sub = control / "src"
    sub.mkdir()
    recorded(sub, ConfigError("config.toml: not valid TOML\n  at line 3"))
    recorded(control, RuntimeError("boom"))
    recorded(control)
    ticks = read_ring(ticks_file(control)).ticks
    assert [(t.exit_code, t.error) for t in ticks] == [
        (1, "config.toml: not valid TOML at line 3"),
        (3, "internal error (a bug in ralph): RuntimeError: boom"),
        (0, None),
    ]
    assert all(t.seconds >= 0 and t.at.tzinfo is not None for t in ticks)


def test_a_tick_asks_git_for_its_root_and_its_base_branch_once(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record of a tick's end remembers the config the tick ran with. It used to open the checkout
    over again: its root, its config and, with no base_branch configured, the remote's HEAD branch."""
    project.configure(git={"base_branch": None})
    calls: list[tuple[str, ...]] = []
    real_run = Git.run
    monkeypatch.setattr(Git, "run", lambda self, *a, **k: calls.append(a) or real_run(self, *a, **k))
    result = ralph(project.control, "run", "--allow-root")
    assert result.exit_code == 0, result.output
    assert calls.count(("rev-parse", "--show-toplevel")) == 1
    assert [a for a in calls if a[0] == "symbolic-ref"] == [
        ("symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
    ]
    remembered = read_ring(ticks_file(project.control)).remembered
    assert remembered is not None and remembered.base_branch == "main"


def test_recording_exit_75_names_the_holder(control: Path) -> None:
    (control / ".ralph" / "cache" / "parallel").mkdir(parents=True)
    health.tick_lock_file(control).write_text("pid 4242 since 2026-11-21T10:00:00Z\n")
    recorded(control, LockBusy("another ralph tick holds it"))
    (tick,) = read_ring(ticks_file(control)).ticks
    assert (tick.exit_code, tick.holder) == (75, Holder(4242, T0))


def test_a_remote_the_tick_could_not_reach_is_recorded(control: Path) -> None:
    (control / ".ralph").mkdir()
    with health.recording(control, facts=lambda root: None, announce=lambda root, change: None):
        health.note_remote_unreachable("fatal: unable to access\n 'https://git.example/': timed out")
    (tick,) = read_ring(ticks_file(control)).ticks
    assert (tick.exit_code, tick.remote_error) == (
        0,
        "fatal: unable to access 'https://git.example/': timed out",
    )
    # The flag is this tick's only: the next one starts clean.
    recorded(control)
    assert read_ring(ticks_file(control)).ticks[-1].remote_error is None


def test_nothing_is_recorded_outside_a_checkout_set_up_for_ralph(control: Path, tmp_path: Path) -> None:
    recorded(control, ConfigError("x"))  # no .ralph/ here: not set up
    assert not (control / ".ralph").exists()
    recorded(tmp_path / "nowhere", ConfigError("x"))


def test_health_imports_only_the_standard_library() -> None:
    """The run entry point records through it before anything heavy is imported."""
    code = (
        "import sys; before = set(sys.modules); import ralph.health; "
        "new = sorted(m for m in set(sys.modules) - before if not m.startswith('_')); print(' '.join(new))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    ours = [m for m in out if m.split(".")[0] == "ralph"]
    assert ours == ["ralph", "ralph.health", "ralph.ring"]
    for heavy in ("pydantic", "click", "sh", "filelock", "tomli_w"):
        assert not any(m.split(".")[0] == heavy for m in out), out
    stdlib = set(sys.stdlib_module_names)
    assert all(m.split(".")[0] in stdlib for m in out if m.split(".")[0] != "ralph"), out


# --- real ticks ------------------------------------------------------------------------------------------


def hook_recorder(project: Project) -> Path:
    """An on_event hook that appends RALPH_EVENT, RALPH_TASK_ID and RALPH_REASON to a file."""
    out = project.control.parent / "heard.jsonl"
    script = executable(
        project.control.parent / "hook.py",
        "#!" + sys.executable + "\n"
        "import json, os\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(json.dumps({k: os.environ.get(k) for k in "
        "('RALPH_EVENT', 'RALPH_TASK_ID', 'RALPH_REASON', 'RALPH_BASE_BRANCH')}) + '\\n')\n",
    )
    project.configure(hooks={"on_event": [str(script)]})
    return out


def heard(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_broken_config_makes_ticks_fail_loudly_and_the_hook_hears_it_once(project: Project) -> None:
    out = hook_recorder(project)
    assert project.tick_process().returncode == 0  # a good tick remembers the hook command
    config = project.control / ".ralph" / "config.toml"
    good = config.read_text()
    config.write_text(good + "\n[bogus]\nkey = 1\n")
    for _ in range(ALERT_AFTER + 2):
        result = project.tick_process()
        assert result.returncode == 1, result.stderr
    # Status and doctor say it first, with the error, and exit 1 (status cannot read the config either).
    status = ralph(project.control, "status")
    assert status.exit_code == 1
    assert status.stdout.startswith(f"TICKS FAILING: the last {ALERT_AFTER + 2} ticks failed: ")
    assert "bogus" in status.stdout and status.stdout.count("\n") == 1
    assert status.stderr.startswith("ralph: error: ") and "bogus" in status.stderr
    doctored = ralph(project.control, "doctor", "--allow-root")
    assert doctored.exit_code == 1
    assert doctored.stdout.splitlines()[0].startswith(f"FAIL  the last {ALERT_AFTER + 2} ticks failed: ")
    wait_until(lambda: len(heard(out)) >= 1, message="the hook never ran")
    time.sleep(0.5)  # a second, wrong notice would have arrived by now
    (notice,) = heard(out)
    assert notice["RALPH_EVENT"] == "ticks_failing"
    assert notice["RALPH_TASK_ID"] == health.HOOK_RUN_DIR
    assert notice["RALPH_BASE_BRANCH"] == "main"
    assert notice["RALPH_REASON"].startswith(f"the last {ALERT_AFTER} ticks failed: ")
    # Fixed: the next tick recovers, and the hook hears that once too.
    config.write_text(good)
    assert project.tick_process().returncode == 0
    assert project.tick_process().returncode == 0
    wait_until(lambda: len(heard(out)) >= 2, message="the hook never heard of the recovery")
    time.sleep(0.5)
    assert [n["RALPH_EVENT"] for n in heard(out)] == ["ticks_failing", "ticks_recovered"]
    assert ralph(project.control, "status").exit_code == 0
    ring = read_ring(ticks_file(project.control))
    assert [t.exit_code for t in ring.ticks] == [0, *([1] * (ALERT_AFTER + 2)), 0, 0]


def test_a_hung_tick_is_unhealthy(project: Project) -> None:
    since = datetime.now(UTC) - timedelta(hours=1)
    holder, _ = hold_lock(project.paths.lock, since=since)
    try:
        for _ in range(2):
            result = project.tick_process()
            assert result.returncode == 75, result.stderr
        ring = read_ring(ticks_file(project.control))
        assert [t.exit_code for t in ring.ticks] == [75, 75]
        assert ring.ticks[-1].holder == Holder(holder.pid, since.replace(microsecond=0))
        found = health.load(project.control)
        assert found.verdict == "hung" and found.streak == 2
        status = ralph(project.control, "status")
        assert status.exit_code == 1
        assert status.stdout.splitlines()[1].startswith(
            f"TICKS HUNG: the last 2 ticks found the lock held by pid {holder.pid} since "
        )
        doctored = ralph(project.control, "doctor", "--allow-root")
        assert doctored.stdout.splitlines()[0].startswith("FAIL  the last 2 ticks found the lock held")
        assert f"`kill {holder.pid}`" in doctored.stdout.splitlines()[0]
    finally:
        stop(holder)
    assert project.tick_process().returncode == 0
    assert health.load(project.control).verdict == "ok"


def test_doctor_reports_healthy_ticks_in_place(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert project.tick_process().returncode == 0
    code = doctor(start=project.control, as_json=True, cron=False, allow_root=True)
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert code == ExitCode.OK
    assert checks["ticks"]["level"] == "ok"
    assert checks["ticks"]["detail"].startswith("ticks: the last one ended ")
    assert checks["ticks"]["detail"].endswith(" ago (exit 0)")


def test_a_dry_run_records_nothing(project: Project) -> None:
    assert project.tick_process("--dry-run").returncode == 0
    assert not ticks_file(project.control).exists()
