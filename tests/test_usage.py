"""ralph.usage over what the real agent CLIs printed (tests/fixtures/agents/, recorded by its
record.py against tests/model_server.py): their usage reports, and the usage and rate limits they
gave up on, with the reset each stated."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from model_server import USAGE_CACHED, USAGE_INPUT, USAGE_OUTPUT

from ralph.config import PricePerMtok
from ralph.state import Usage
from ralph.usage import Report, detect_limit, dollars, over_budget, read_usage, this_run

FIXTURES = Path(__file__).parent / "fixtures" / "agents"
TURNS = 3  # every `ok` case plays three turns: write a file, run a program, answer


def recorded(name: str) -> tuple[bytes, dict[str, Any]]:
    return (FIXTURES / f"{name}.log").read_bytes(), json.loads((FIXTURES / f"{name}.json").read_text())


def ended(meta: dict[str, Any]) -> datetime:
    """When the recorded run ended: the time a tick reads its clock times against."""
    return datetime.fromtimestamp(meta["recorded_at"] + meta["seconds"], UTC)


def limit_of(name: str) -> Any:
    output, meta = recorded(name)
    return detect_limit(meta["cli"], output, exit_code=meta["exit_code"], now=ended(meta))


def test_every_recorded_case_is_tested() -> None:
    cases = {p.stem for p in FIXTURES.glob("*.log")}
    assert cases == set(USAGE_CASES) | set(LIMIT_CASES) | set(NOT_LIMITS), cases


# --- usage reports -------------------------------------------------------------------------------------

UNCACHED = USAGE_INPUT - USAGE_CACHED
THREE_TURNS = Report(TURNS * UNCACHED, TURNS * USAGE_CACHED, TURNS * USAGE_OUTPUT)
USAGE_CASES = {
    # Claude Code prices the tokens itself (its own price for the model name).
    "claude-ok": Report(TURNS * UNCACHED, TURNS * USAGE_CACHED, TURNS * USAGE_OUTPUT, 0.01416),
    "codex-ok": THREE_TURNS,
    # Gemini CLI's router asks the model once more, and that request counts too.
    "gemini-ok": Report(4 * UNCACHED, 4 * USAGE_CACHED, 4 * USAGE_OUTPUT),
    "opencode-ok": THREE_TURNS,
    # With a price in its model's config: $3 in, $0.30 cached, $15 out per million, per step.
    "opencode-ok-priced": Report(
        TURNS * UNCACHED, TURNS * USAGE_CACHED, TURNS * USAGE_OUTPUT, TURNS * 0.00357
    ),
    # aider counts tokens itself (597 + the prompt's), not asking the server.
    "aider-ok": Report(601, 0, 12),
    "aider-ok-priced": Report(601, 0, 12, 0.0020),
}


@pytest.mark.parametrize("name", sorted(USAGE_CASES))
def test_the_usage_report_of_each_cli(name: str) -> None:
    output, meta = recorded(name)
    report = read_usage(meta["cli"], output)
    expected = USAGE_CASES[name]
    assert report is not None
    assert (report.input_tokens, report.cached_input_tokens, report.output_tokens) == (
        expected.input_tokens,
        expected.cached_input_tokens,
        expected.output_tokens,
    )
    if expected.cost_usd is None:
        assert report.cost_usd is None
    else:
        assert report.cost_usd == pytest.approx(expected.cost_usd)


@pytest.mark.parametrize("name", ["codex-ok", "gemini-ok", "opencode-ok", "aider-ok"])
def test_a_price_per_million_tokens_gives_a_cost_where_the_cli_gives_none(name: str) -> None:
    output, meta = recorded(name)
    price = PricePerMtok(input=3.0, output=15.0)
    report = read_usage(meta["cli"], output, price=price)
    assert report is not None and report.cost_usd is not None
    tokens = report.input_tokens, report.cached_input_tokens, report.output_tokens
    assert report.cost_usd == pytest.approx((tokens[0] * 3.0 + tokens[1] * 3.0 + tokens[2] * 15.0) / 1e6)
    cheaper = read_usage(meta["cli"], output, price=PricePerMtok(input=3.0, output=15.0, cached_input=0.3))
    assert cheaper is not None
    assert cheaper.cost_usd == pytest.approx((tokens[0] * 3.0 + tokens[1] * 0.3 + tokens[2] * 15.0) / 1e6)


def test_the_cli_s_own_cost_wins_over_a_configured_price() -> None:
    output, _ = recorded("claude-ok")
    report = read_usage("claude", output, price=PricePerMtok(input=1000.0, output=1000.0))
    assert report is not None and report.cost_usd == pytest.approx(0.01416)


@pytest.mark.parametrize("name", ["claude-rate-limit", "codex-quota", "gemini-daily-quota", "opencode-quota"])
def test_a_run_refused_from_its_first_request_reported_nothing(name: str) -> None:
    output, meta = recorded(name)
    assert read_usage(meta["cli"], output) is None


def test_the_command_runner_reports_nothing() -> None:
    output, _ = recorded("claude-ok")
    assert read_usage("command", output) is None
    assert detect_limit("command", output, exit_code=1, now=datetime.now(UTC)) is None


def test_while_claude_runs_its_messages_say_their_input_so_far() -> None:
    """Before its final `result`, Claude Code's lines carry each message's opening usage: the input
    in full, the output as 1 (one line per content block of a message, counted once)."""
    output, _ = recorded("claude-ok")
    running = b"\n".join(line for line in output.splitlines() if b'"type":"result"' not in line)
    report = read_usage("claude", running, price=PricePerMtok(input=3.0, output=15.0))
    assert report == Report(
        TURNS * UNCACHED, TURNS * USAGE_CACHED, TURNS * 1, (TURNS * USAGE_INPUT * 3.0 + TURNS * 15.0) / 1e6
    )


def test_while_opencode_runs_its_finished_steps_add_up() -> None:
    output, _ = recorded("opencode-ok-priced")
    steps = [line for line in output.splitlines(keepends=True) if b'"type":"step_finish"' in line]
    report = read_usage("opencode", b"".join(steps[:2]))
    assert report == Report(2 * UNCACHED, 2 * USAGE_CACHED, 2 * USAGE_OUTPUT, pytest.approx(2 * 0.00357))


def test_aider_s_rounded_counts_wrapped_lines_and_running_session_cost() -> None:
    output = (
        b"Tokens: 12k sent, 1.5k cache write, 2.3k cache hit, 1.1k received.\n"
        b"Cost: $0.05 message, $0.05 session.\n"
        b"some reply\n"
        b"Tokens: 9.8k sent, 850 received. Cost: $0.0031 message, $0.0531\nsession.\n"
    )
    # Every message's tokens add up; the session figure is already the run's total.
    assert read_usage("aider", output) == Report(12_000 + 1_500 - 2_300 + 9_800, 2_300, 1_100 + 850, 0.0531)


def test_a_log_holds_every_run_and_only_the_latest_is_read() -> None:
    first, _ = recorded("codex-ok")
    frame = b"[ralph.job 2026-12-04T22:00:00.000000Z] started agent for RQ-0001: [...] in /ws (in a box)\n"
    log = frame + first + b"[ralph.job ...] finished agent for RQ-0001: exit 0\n" + frame + first
    assert this_run(log) == frame + first
    report = read_usage("codex", this_run(log))
    assert report is not None and report.input_tokens == TURNS * UNCACHED
    assert this_run(first) == first  # no frame: all of it (the start was rotated away)


# --- usage and rate limits -----------------------------------------------------------------------------

# name: (kind, window, reset) with reset "recorded" (the server's, to the minute), a number of seconds
# after the run's end, or None.
LIMIT_CASES: dict[str, tuple[str, str, str | float | None]] = {
    # A Claude plan (an OAuth login): the rate_limit_event's resetsAt, to the second.
    "claude-usage-limit-plan": ("usage limit", "5-hour", "recorded"),
    # An API key's spend limit: "You will regain access on 2026-12-04 at 23:27 UTC."
    "claude-spend-limit": ("spend limit", "", "recorded"),
    "claude-credit": ("out of credit", "", None),
    "claude-rate-limit": ("rate limit", "", None),
    # "try again at 11:27 PM." and "try again at Dec 8th, 2026 12:27 AM."
    "codex-usage-limit": ("usage limit", "", "recorded"),
    "codex-usage-limit-days": ("usage limit", "", "recorded"),
    "codex-quota": ("out of credit", "", None),
    "codex-rate-limit": ("rate limit", "", None),
    # The provider's "Please retry in 3600s." from its error dump, after the result's timestamp.
    "gemini-daily-quota": ("daily quota", "", 3600.0),
    "gemini-rate-limit": ("rate limit", "", None),
    # The provider's body is in opencode's error line: its resets_at.
    "opencode-usage-limit": ("usage limit", "", "recorded"),
    "opencode-quota": ("out of credit", "", None),
    "opencode-rate-limit": ("rate limit", "", None),
    # aider exits 0 after giving up; its text says it was rate limited, with no retry after.
    "aider-rate-limit": ("rate limit", "", None),
}
NOT_LIMITS = ["claude-server-error", "codex-server-error", "gemini-server-error", "opencode-server-error"]
NOT_LIMITS += ["aider-server-error"]


@pytest.mark.parametrize("name", sorted(LIMIT_CASES))
def test_the_limit_each_cli_gave_up_on_and_the_reset_it_stated(name: str) -> None:
    output, meta = recorded(name)
    limit = limit_of(name)
    kind, window, reset = LIMIT_CASES[name]
    assert limit is not None
    assert (limit.kind, limit.window) == (kind, window)
    assert limit.said and "\n" not in limit.said
    if reset is None:
        assert limit.reset_at is None
    elif reset == "recorded":
        assert limit.reset_at is not None
        stated = datetime.fromtimestamp(meta["reset_at"], UTC)
        assert abs(limit.reset_at - stated) < timedelta(minutes=1)  # codex and claude's text round down
    else:
        assert limit.reset_at is not None
        assert abs(limit.reset_at - (ended(meta) + timedelta(seconds=float(reset)))) < timedelta(seconds=30)


@pytest.mark.parametrize("name", NOT_LIMITS + sorted(USAGE_CASES))
def test_a_server_error_or_a_good_run_is_no_limit(name: str) -> None:
    assert limit_of(name) is None


def test_aider_rate_limited_but_retrying_has_not_given_up() -> None:
    output, _ = recorded("aider-rate-limit")
    cut = output.rfind(b"Retrying in ")
    still_retrying = output[: output.index(b"\n", cut) + 1]
    assert detect_limit("aider", still_retrying, exit_code=None, now=datetime.now(UTC)) is None


def test_codex_s_clock_time_is_the_next_one_after_the_run() -> None:
    output, _ = recorded("codex-usage-limit")  # "try again at 11:27 PM."
    before = datetime(2026, 12, 4, 22, 27, tzinfo=UTC)
    limit = detect_limit("codex", output, exit_code=1, now=before)
    assert limit is not None and limit.reset_at == datetime(2026, 12, 4, 23, 27, tzinfo=UTC)
    # Read after midnight (a tick that came late): the job's end says which day it meant.
    after = datetime(2026, 12, 5, 0, 5, tzinfo=UTC)
    limit = detect_limit("codex", output, exit_code=1, now=after)
    assert limit is not None and limit.reset_at == datetime(2026, 12, 5, 23, 27, tzinfo=UTC)


def test_claude_s_text_gives_the_reset_when_its_event_has_no_epoch() -> None:
    output, meta = recorded(
        "claude-usage-limit-plan"
    )  # "You've hit your 5-hour limit · resets 12:27am (UTC)"
    lines = []
    for line in output.splitlines():
        if b'"rate_limit_event"' in line:
            event = json.loads(line)
            del event["rate_limit_info"]["resetsAt"]
            line = json.dumps(event).encode()
        lines.append(line)
    limit = detect_limit("claude", b"\n".join(lines), exit_code=1, now=ended(meta))
    assert limit is not None and limit.kind == "usage limit"
    assert limit.reset_at == datetime(2026, 12, 5, 0, 27, tzinfo=UTC)


def test_over_budget_counts_recorded_runs_and_the_running_one() -> None:
    runs = [Usage(attempt=1, cost_usd=0.6), Usage(attempt=1, remediation=1), Usage(attempt=2, cost_usd=0.3)]
    assert over_budget(runs, None) is None
    assert over_budget(runs, 1.0) is None
    assert over_budget(runs, 1.0, running=Report(10, 0, 10, 0.2)) == (
        "its agent runs cost $1.10, over agent.max_cost_usd_per_task ($1.00)"
    )
    assert over_budget(runs, 0.5) == "its agent runs cost $0.90, over agent.max_cost_usd_per_task ($0.50)"
    assert over_budget(runs, 0.01, running=Report(0, 0, 0, 0.00416)) == (
        "its agent runs cost $0.9042, over agent.max_cost_usd_per_task ($0.01)"
    )


@pytest.mark.parametrize(
    ("amount", "shown"),
    [(0, "$0.00"), (0.01, "$0.01"), (0.01416, "$0.0142"), (0.5, "$0.50"), (12.345, "$12.35")],
)
def test_dollars_keep_the_digits_that_tell_small_amounts_apart(amount: float, shown: str) -> None:
    assert dollars(amount) == shown
