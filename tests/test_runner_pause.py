"""A runner's pause after a usage or rate limit (state.json's runner_pauses): until the stated reset,
else 5 minutes doubling with every limit in a row, capped at 6 hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ralph.state import State, new_state, parse_state, render_state

NOW = datetime(2026, 12, 4, 22, 0, tzinfo=UTC)


def fresh() -> State:
    return new_state(target_branch="main", remote="origin", now=NOW)


def test_a_stated_reset_is_the_end_of_the_pause() -> None:
    state = fresh()
    reset = NOW + timedelta(hours=1, minutes=41)
    pause = state.pause_runner("claude", now=NOW, reason="usage limit (5-hour)", reset_at=reset)
    assert (pause.until, pause.strikes) == (reset, 1)
    assert pause.describe(NOW) == "claude paused until 23:41Z: usage limit (5-hour), reset stated by the CLI"
    assert pause.describe(NOW - timedelta(days=1)).startswith("claude paused until 2026-12-04 23:41Z")
    assert state.runner_pause("claude", NOW) == pause
    assert state.runner_pause("codex", NOW) is None
    assert state.runner_pause("claude", reset) is None  # over at the reset


def test_a_reset_already_past_still_pauses_a_minute() -> None:
    pause = fresh().pause_runner("codex", now=NOW, reason="usage limit", reset_at=NOW - timedelta(minutes=3))
    assert pause.until == NOW + timedelta(minutes=1)


def test_without_a_reset_the_pause_doubles_with_every_limit_in_a_row_up_to_six_hours() -> None:
    state = fresh()
    now = NOW
    lengths = []
    for _ in range(9):
        pause = state.pause_runner("claude", now=now, reason="rate limit", reset_at=None)
        lengths.append(int((pause.until - pause.since).total_seconds() // 60))
        now = pause.until  # the pause ends, the task runs again, and hits the limit again
    assert lengths == [5, 10, 20, 40, 80, 160, 320, 360, 360]
    assert pause.strikes == 9
    assert pause.reason == "rate limit, no reset stated: 360 min (limit 9 in a row)"
    assert len(state.runner_pauses) == 1


def test_runs_stopped_by_the_same_limit_while_it_holds_add_no_strike() -> None:
    state = fresh()
    first = state.pause_runner("claude", now=NOW, reason="rate limit", reset_at=None)
    again = state.pause_runner("claude", now=NOW + timedelta(minutes=1), reason="rate limit", reset_at=None)
    assert again == first and again.strikes == 1
    # A stated reset earlier than the pause in force does not shorten it; a later one lengthens it.
    earlier = NOW + timedelta(minutes=2)
    assert state.pause_runner("claude", now=NOW, reason="usage limit", reset_at=earlier) == first
    later = NOW + timedelta(hours=2)
    assert state.pause_runner("claude", now=NOW, reason="usage limit", reset_at=later).until == later


def test_a_run_without_a_limit_forgets_a_pause_that_is_over_and_its_strikes() -> None:
    state = fresh()
    pause = state.pause_runner("claude", now=NOW, reason="rate limit", reset_at=None)
    assert state.forget_runner_pause("claude", NOW) is False  # still holding: a run from before it
    assert state.forget_runner_pause("claude", pause.until) is True
    assert state.runner_pauses == []
    again = state.pause_runner("claude", now=pause.until, reason="rate limit", reset_at=None)
    assert again.strikes == 1


def test_runner_pauses_survive_a_save_and_load() -> None:
    state = fresh()
    state.pause_runner("gemini", now=NOW, reason="daily quota", reset_at=NOW + timedelta(hours=3))
    loaded = parse_state(render_state(state), NOW)
    assert loaded.runner_pauses == state.runner_pauses
