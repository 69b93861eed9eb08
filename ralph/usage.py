"""What an agent run reported: the tokens and dollars it spent, and whether it stopped at a usage or
rate limit (and until when). Pure functions over a job's log bytes, its exit status and a time.

Each preset's CLI reports differently; contrib/agents/FACTS.md (sections d and e) records what each
prints, observed against a scripted model server, and tests/fixtures/agents/ holds those outputs.
The `command` runner is the user's own program: nothing is read from it.

Tokens are counted one way for every runner (as ralph.history adds them up): `input_tokens` is the
input not read from a cache (what is written to one included), `cached_input_tokens` the input read
from a cache, `output_tokens` what the model wrote. A cost is the CLI's own figure where it gives one,
else computed from agent.price_per_mtok.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from ralph.config import PricePerMtok
from ralph.queue import parse_rfc3339
from ralph.state import Usage

# A job's log frames each run with the wrapper's own lines (ralph.job): the last start is this run's.
_RUN_START = re.compile(rb"^\[ralph\.job [^\]]*\] started agent for ", re.MULTILINE)


def this_run(log: bytes) -> bytes:
    """The part of an agent log written by its latest run (the log keeps every run of the task)."""
    starts = list(_RUN_START.finditer(log))
    return log[starts[-1].start() :] if starts else log


# --- tokens and cost ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """One run's usage as its CLI reported it."""

    input_tokens: int = 0  # cache reads not included
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None  # None: the CLI did not say

    @property
    def empty(self) -> bool:
        return not (self.input_tokens or self.output_tokens or self.cost_usd)

    def priced(self, price: PricePerMtok | None) -> Report:
        """With a cost from `price` when the CLI gave none (cache reads at the input price unless it
        names one of their own)."""
        if self.cost_usd is not None or price is None:
            return self
        cached = price.input if price.cached_input is None else price.cached_input
        cost = (
            self.input_tokens * price.input
            + self.cached_input_tokens * cached
            + self.output_tokens * price.output
        ) / 1_000_000
        return replace(self, cost_usd=cost)

    def usage(self, *, attempt: int, remediation: int) -> Usage:
        return Usage(
            attempt=attempt,
            remediation=remediation,
            input_tokens=self.input_tokens,
            cached_input_tokens=self.cached_input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
        )


def read_usage(runner: str, output: bytes, *, price: PricePerMtok | None = None) -> Report | None:
    """What the run whose `output` this is reported spending, so far; None when it reported nothing.

    A finished run's final report when there is one; while it runs (or when it was killed), what its
    CLI printed along the way: opencode's steps and aider's messages are complete, Claude Code's
    messages say their input but not their final output; codex and gemini say nothing until the end.
    """
    reader = _USAGE_READERS.get(runner)
    if reader is None:
        return None
    report = reader(output)
    if report is None or report.empty:
        return None
    return report.priced(price)


def _claude_usage(output: bytes) -> Report | None:
    final = None
    messages: dict[str, dict[str, Any]] = {}
    for event in _events(output):
        if event.get("type") == "result" and isinstance(event.get("usage"), dict):
            final = event
        elif event.get("type") == "assistant":
            message = event.get("message")
            if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                messages[str(message.get("id"))] = message["usage"]  # one line per block: the last
    if final is not None:
        report = _anthropic_tokens(final["usage"])
        cost = final.get("total_cost_usd")
        return replace(report, cost_usd=float(cost)) if _number(cost) else report
    if not messages:
        return None
    return _sum(_anthropic_tokens(u) for u in messages.values())


def _anthropic_tokens(usage: dict[str, Any]) -> Report:
    # The API's input_tokens leaves out what was read from or written to the cache.
    cached = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    return Report(
        input_tokens=_int(usage.get("input_tokens")) + written,
        cached_input_tokens=cached,
        output_tokens=_int(usage.get("output_tokens")),
    )


def _codex_usage(output: bytes) -> Report | None:
    turns = [
        e["usage"]
        for e in _events(output)
        if e.get("type") == "turn.completed" and isinstance(e.get("usage"), dict)
    ]
    if not turns:
        return None
    reports = []
    for u in turns:
        cached = _int(u.get("cached_input_tokens"))
        reports.append(
            Report(
                input_tokens=max(0, _int(u.get("input_tokens")) - cached),  # its input includes them
                cached_input_tokens=cached,
                output_tokens=_int(u.get("output_tokens")),
            )
        )
    return _sum(reports)


def _gemini_usage(output: bytes) -> Report | None:
    results = [e for e in _events(output) if e.get("type") == "result" and isinstance(e.get("stats"), dict)]
    if not results:
        return None
    stats = results[-1]["stats"]
    cached = _int(stats.get("cached"))
    return Report(
        input_tokens=max(0, _int(stats.get("input_tokens")) - cached),  # its input_tokens includes them
        cached_input_tokens=cached,
        output_tokens=_int(stats.get("output_tokens")),
    )


def _opencode_usage(output: bytes) -> Report | None:
    steps = [
        e["part"]
        for e in _events(output)
        if e.get("type") == "step_finish" and isinstance(e.get("part"), dict)
    ]
    if not steps:
        return None
    reports = []
    costs = []
    for part in steps:
        tokens = _dict(part.get("tokens"))
        cache = _dict(tokens.get("cache"))
        read, written = _int(cache.get("read")), _int(cache.get("write"))
        reports.append(
            Report(
                input_tokens=_int(tokens.get("input")) + written,  # its input leaves the cache out
                cached_input_tokens=read,
                output_tokens=_int(tokens.get("output")),
            )
        )
        if _number(part.get("cost")):
            costs.append(float(part["cost"]))
    total = _sum(reports)
    # It reports 0 for a model whose price its config does not give: that is "not said", not free.
    return replace(total, cost_usd=sum(costs)) if any(costs) else total


# aider prints a line per message, wrapped at 80 columns: "Tokens: 2.3k sent, 1.1k cache hit, 12
# received. Cost: $0.0020 message, $0.0040 session." (the cost only when it knows the model's price).
_AIDER_TOKENS = re.compile(
    r"Tokens: (?P<sent>[\d.]+[kM]?) sent"
    r"(?:, (?P<write>[\d.]+[kM]?) cache write)?"
    r"(?:, (?P<hit>[\d.]+[kM]?) cache hit)?"
    r", (?P<received>[\d.]+[kM]?) received\."
    r"(?:\s+Cost: \$(?P<message>[\d.]+) message, \$(?P<session>[\d.]+) session\.)?"
)


def _aider_usage(output: bytes) -> Report | None:
    text = " ".join(output.decode(errors="replace").split())
    reports = []
    session = None
    for m in _AIDER_TOKENS.finditer(text):
        # What it "sent" includes the cache hits (its prompt_tokens); cache writes come on top.
        sent, hit = _aider_count(m["sent"]) + _aider_count(m["write"]), _aider_count(m["hit"])
        reports.append(
            Report(
                input_tokens=max(0, sent - hit),
                cached_input_tokens=min(hit, sent),
                output_tokens=_aider_count(m["received"]),
            )
        )
        if m["session"]:
            session = float(m["session"])  # its running total for the whole run
    if not reports:
        return None
    return replace(_sum(reports), cost_usd=session)


def _aider_count(text: str | None) -> int:
    """aider's own rounding of a count: 597, 2.3k, 12k, 1.2M."""
    if not text:
        return 0
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return round(float(text.rstrip("kM")) * scale)


_USAGE_READERS: dict[str, Callable[[bytes], Report | None]] = {
    "claude": _claude_usage,
    "codex": _codex_usage,
    "gemini": _gemini_usage,
    "opencode": _opencode_usage,
    "aider": _aider_usage,
}


def over_budget(
    entries: Sequence[Usage], limit: float | None, *, running: Report | None = None
) -> str | None:
    """Why a task may not spend more (agent.max_cost_usd_per_task), or None. `entries` are its runs'
    recorded usage; `running` what the run still going has reported so far. A run that reported no
    cost (and has no agent.price_per_mtok) counts as nothing: the limit cannot see it."""
    if limit is None:
        return None
    spent = sum(u.cost_usd or 0.0 for u in entries) + ((running.cost_usd or 0.0) if running else 0.0)
    if spent <= limit:
        return None
    return f"its agent runs cost {dollars(spent)}, over agent.max_cost_usd_per_task ({dollars(limit)})"


def dollars(amount: float) -> str:
    """`$1.20`; a small amount with the digits that tell it apart: `$0.0142`, `$0.01`."""
    if amount >= 1:
        return f"${amount:.2f}"
    whole, _, cents = f"{amount:.4f}".partition(".")
    return f"${whole}.{cents.rstrip('0').ljust(2, '0')}"


# --- usage and rate limits ------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """The CLI gave up because its provider refused: a usage or spend limit, a quota, a rate limit."""

    kind: str  # "usage limit", "spend limit", "out of credit", "daily quota", "rate limit"
    said: str  # what the CLI said, on one line
    reset_at: datetime | None = None  # when the CLI said it opens again; None: it did not say
    window: str = ""  # the plan's window, when the CLI names it: "5-hour", "7-day"

    def describe(self) -> str:
        """`usage limit (5-hour)`."""
        return f"{self.kind} ({self.window})" if self.window else self.kind


def detect_limit(runner: str, output: bytes, *, exit_code: int | None, now: datetime) -> Limit | None:
    """The limit that ended the run whose `output` this is, or None for any other ending.

    `now` is when the CLI wrote it (the job's end): a reset stated as a clock time ("try again at
    10:41 PM", read as UTC: agents run with TZ=UTC) is the next such time after it.
    """
    detector = _LIMIT_DETECTORS.get(runner)
    if detector is None:
        return None
    return detector(output, exit_code, now)


def _claude_limit(output: bytes, exit_code: int | None, now: datetime) -> Limit | None:
    events = list(_events(output))
    result = next((e for e in reversed(events) if e.get("type") == "result"), None)
    if result is None or result.get("is_error") is not True:
        return None
    said = _one_line(result.get("result"))
    status = result.get("api_error_status")
    errors = {
        e.get("error") for e in events if e.get("type") == "assistant" and e.get("is_api_error_message")
    }
    if status == 429:
        rejected = [
            e["rate_limit_info"]
            for e in events
            if e.get("type") == "rate_limit_event"
            and isinstance(e.get("rate_limit_info"), dict)
            and e["rate_limit_info"].get("status") == "rejected"
        ]
        if rejected:
            # A Claude plan's window is spent: the event names it and when it reopens.
            info = rejected[-1]
            resets = info.get("resetsAt")
            window = str(info.get("rateLimitType") or "")
            return Limit(
                "usage limit",
                said,
                datetime.fromtimestamp(resets, UTC) if _number(resets) else _claude_resets(said, now),
                _CLAUDE_WINDOWS.get(window, window.replace("_", " ")),
            )
        return Limit("rate limit", said)
    spend = _SPEND_LIMIT.search(said)
    if spend:
        return Limit("spend limit", said, _date_time(spend["date"], spend["time"]))
    if "billing_error" in errors or "credit balance is too low" in said.lower():
        return Limit("out of credit", said)
    return None


_CLAUDE_WINDOWS = {
    "five_hour": "5-hour",
    "seven_day": "7-day",
    "seven_day_opus": "7-day Opus",
    "seven_day_sonnet": "7-day Sonnet",
}
_SPEND_LIMIT = re.compile(
    r"reached your specified API usage limits\. You will regain access on "
    r"(?P<date>\d{4}-\d\d-\d\d) at (?P<time>\d\d:\d\d) UTC"
)
_CLAUDE_RESETS = re.compile(r"resets (\d{1,2})(?::(\d\d))?\s*([ap]m) \(UTC\)", re.IGNORECASE)


def _claude_resets(said: str, now: datetime) -> datetime | None:
    """`resets 11:41pm (UTC)` in the text, when the event with the epoch is missing."""
    m = _CLAUDE_RESETS.search(said)
    if m is None:
        return None
    hour = int(m[1]) % 12 + (12 if m[3].lower() == "pm" else 0)
    return _next_clock_time(now, hour, int(m[2] or 0))


def _codex_limit(output: bytes, exit_code: int | None, now: datetime) -> Limit | None:
    # An `error` line alone is not the end (it reconnects); `turn.failed` is.
    failed = [e for e in _events(output) if e.get("type") == "turn.failed"]
    if not failed:
        return None
    error = failed[-1].get("error")
    said = _one_line(error.get("message") if isinstance(error, dict) else None)
    if _CODEX_USAGE_LIMIT.search(said):
        again = _CODEX_TRY_AGAIN.search(said)
        return Limit("usage limit", said, _codex_reset(again[1], now) if again else None)
    if said.startswith("Quota exceeded"):
        return Limit("out of credit", said)
    if "last status: 429" in said:
        return Limit("rate limit", said)
    return None


_CODEX_USAGE_LIMIT = re.compile(r"You[’']ve hit your usage limit")
_CODEX_TRY_AGAIN = re.compile(r"try again at (.+?)\.?$")


def _codex_reset(when: str, now: datetime) -> datetime | None:
    """`10:41 PM` (today, or tomorrow once that has passed) or `Dec 7th, 2026 11:44 PM`."""
    when = re.sub(r"(\d)(st|nd|rd|th),", r"\1,", when.strip())
    for fmt in ("%I:%M %p", "%b %d, %Y %I:%M %p"):
        try:
            parsed = datetime.strptime(when, fmt)  # noqa: DTZ007 - the box's zone is UTC, added below
        except ValueError:
            continue
        if fmt == "%I:%M %p":
            return _next_clock_time(now, parsed.hour, parsed.minute)
        return parsed.replace(tzinfo=UTC)
    return None


def _gemini_limit(output: bytes, exit_code: int | None, now: datetime) -> Limit | None:
    results = [e for e in _events(output) if e.get("type") == "result"]
    if not results or results[-1].get("status") != "error":
        return None
    error = results[-1].get("error")
    said = _one_line(error.get("message") if isinstance(error, dict) else None)
    lowered = said.lower()
    # It exits with the HTTP status cut to a byte: 429 becomes 173.
    if "exhausted your daily quota" in lowered:
        # The provider's "Please retry in 3600s." reaches only its error dump on stderr.
        retry = _GEMINI_RETRY_IN.findall(output.decode(errors="replace"))
        stamp = results[-1].get("timestamp")
        stamp = (parse_rfc3339(stamp) if isinstance(stamp, str) else None) or now
        reset = stamp + timedelta(seconds=float(retry[-1])) if retry else None
        return Limit("daily quota", said, reset)
    if (
        exit_code == 429 % 256
        or "quota" in lowered
        or "rate limit" in lowered
        or "resource_exhausted" in lowered
    ):
        return Limit("rate limit", said)
    return None


_GEMINI_RETRY_IN = re.compile(r"Please retry in (\d+(?:\.\d+)?)s")


def _opencode_limit(output: bytes, exit_code: int | None, now: datetime) -> Limit | None:
    errors = [e for e in _events(output) if e.get("type") == "error" and isinstance(e.get("error"), dict)]
    if not errors:
        return None
    data = errors[-1]["error"].get("data")
    if not isinstance(data, dict) or data.get("statusCode") != 429:
        return None
    said = _one_line(data.get("message"))
    # The provider's whole reply is in it: its error type and, for a plan's limit, when it resets.
    body = _json(data.get("responseBody"))
    detail = _dict(_dict(body).get("error"))
    kind = detail.get("code") or detail.get("type")
    if kind == "usage_limit_reached":
        resets = detail.get("resets_at")
        return Limit("usage limit", said, datetime.fromtimestamp(resets, UTC) if _number(resets) else None)
    if kind == "insufficient_quota":
        return Limit("out of credit", said)
    return Limit("rate limit", said)


def _aider_limit(output: bytes, exit_code: int | None, now: datetime) -> Limit | None:
    # It exits 0 after giving up: only its text says so. Each refusal it retries is followed by
    # "Retrying in N seconds..."; the last one, when it gave up, is not.
    text = output.decode(errors="replace")
    at = text.rfind(_AIDER_RATE_LIMITED)
    if at < 0 or "Retrying in " in text[at:]:
        return None
    start = text.rfind("litellm.RateLimitError", 0, at)
    said = " ".join(text[start if start >= 0 else at : at].split()) or _AIDER_RATE_LIMITED
    return Limit("rate limit", _one_line(said))


_AIDER_RATE_LIMITED = "The API provider has rate limited you."

_LIMIT_DETECTORS: dict[str, Callable[[bytes, int | None, datetime], Limit | None]] = {
    "claude": _claude_limit,
    "codex": _codex_limit,
    "gemini": _gemini_limit,
    "opencode": _opencode_limit,
    "aider": _aider_limit,
}


# --- parts ----------------------------------------------------------------------------------------


def _events(output: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects among the lines (a CLI's warnings and stderr come in between)."""
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith(b"{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut by the log's rotation, or not JSON after all
        if isinstance(event, dict):
            yield event


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _int(value: Any) -> int:
    return int(value) if _number(value) else 0


def _sum(reports: Iterator[Report] | list[Report]) -> Report:
    total = Report()
    for r in reports:
        total = Report(
            total.input_tokens + r.input_tokens,
            total.cached_input_tokens + r.cached_input_tokens,
            total.output_tokens + r.output_tokens,
        )
    return total


def _one_line(text: Any, limit: int = 300) -> str:
    said = " ".join(str(text or "").split())
    return said if len(said) <= limit else said[: limit - 1] + "…"


def _date_time(date: str, clock: str) -> datetime | None:
    try:
        return datetime.fromisoformat(f"{date}T{clock}:00+00:00")
    except ValueError:
        return None


def _next_clock_time(now: datetime, hour: int, minute: int) -> datetime:
    """The first `hour:minute` UTC at or after `now`, less a minute's grace (the CLI rounds down)."""
    at = now.astimezone(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return at + timedelta(days=1) if at < now - timedelta(minutes=1) else at
