"""A scripted model server for tests: it plays a conversation to a real agent CLI on 127.0.0.1.

Standard library only (http.server and threads). It speaks, with SSE streaming where the CLIs ask for it:

- the Anthropic Messages API: `POST /v1/messages` (Claude Code adds `?beta=true`), and any `HEAD`
  (Claude Code first sends `HEAD /api/hello`);
- the OpenAI Responses API: `POST /v1/responses` (Codex);
- OpenAI Chat Completions: `POST /v1/chat/completions` (opencode, aider);
- Gemini: `POST /v1beta/models/<model>:generateContent` and `:streamGenerateContent` (Gemini CLI).

A script is a list of turns. A turn is a list of tool calls the model makes in one reply (`WriteFile`,
`Shell`), a final `Answer`, or a `Fail` (an HTTP error in the provider's documented shape). A turn is
mapped onto the tools the CLI offered in that very request (its `tools`), so one script drives every
CLI: `WriteFile` becomes Claude Code's `Write`, Gemini's `write_file`, opencode's `write`, Codex's
`apply_patch`; `Shell` becomes `Bash`, `run_shell_command`, `bash`, `shell`/`exec_command`.

A request that offers no tools (a title or topic request) gets a short text and does not consume a
turn; once the script is played, every request gets the final answer "Done.". With `text_edits=True`
(aider, which offers no tools) every request consumes a turn and `WriteFile` becomes a
SEARCH/REPLACE block in the reply's text.

Every request is logged (method, path, headers, JSON body) for assertions; `tool_results()` gathers
what the CLI sent back from its tools, whichever API it spoke.

Run by hand: `python tests/model_server.py --script turns.json --log requests.jsonl` prints its URL.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import shlex
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

# --------------------------------------------------------------------------------------------------
# The script


@dataclass(frozen=True)
class WriteFile:
    """The model asks to write `content` to `path` (give an absolute path: the CLIs' write tools want
    one; with text_edits it is made relative to the server's `workdir`)."""

    path: str
    content: str


@dataclass(frozen=True)
class Shell:
    """The model asks to run `command` through the CLI's shell tool."""

    command: str


@dataclass(frozen=True)
class Answer:
    """The model's final answer: text, no tool call."""

    text: str


FailKind = Literal[
    "rate_limit", "insufficient_quota", "usage_limit", "spend_limit", "server_error", "overloaded"
]


@dataclass(frozen=True)
class Fail:
    """Answer the next `times` model requests (None: every one, forever) with an error.

    rate_limit: 429 with the provider's rate-limit body and headers (`retry-after`, the reset headers).
    insufficient_quota: OpenAI's 429 `insufficient_quota`; Anthropic's 400 "credit balance is too low";
        Gemini's 429 for a daily quota.
    usage_limit: a plan's usage limit with a reset time: Anthropic's 429 with
        `anthropic-ratelimit-unified-status: rejected` and `-reset`; OpenAI's 429 `usage_limit_reached`
        with `resets_at` (what Codex gets from a ChatGPT plan); Gemini's 429 daily quota.
    spend_limit: Anthropic's 400 "You have reached your specified API usage limits. You will regain
        access on ..."; elsewhere as insufficient_quota.
    server_error: 500; overloaded: Anthropic 529, OpenAI and Gemini 503.
    `in_stream` (Anthropic, Responses): HTTP 200, then the error as a stream event.
    """

    kind: FailKind
    times: int | None = 1
    retry_after: int = 20
    reset_in: int = 3600
    in_stream: bool = False


Action = WriteFile | Shell
Turn = Sequence[Action] | Answer | Fail

FINAL = Answer("Done.")
SIDE_TEXT = "Scripted reply"

# Token counts every successful reply reports, so tests can check a CLI's totals.
USAGE_INPUT = 1200
USAGE_CACHED = 200
USAGE_OUTPUT = 34


def turn_from_json(data: Any) -> Turn:
    """One turn from its JSON form: {"answer": text}, {"fail": kind, ...} or {"calls": [{"write_file":
    {"path", "content"}} | {"shell": command}, ...]}."""
    if "answer" in data:
        return Answer(str(data["answer"]))
    if "fail" in data:
        extra = {k: data[k] for k in ("times", "retry_after", "reset_in", "in_stream") if k in data}
        return Fail(kind=data["fail"], **extra)
    calls: list[Action] = []
    for call in data["calls"]:
        if "write_file" in call:
            calls.append(WriteFile(call["write_file"]["path"], call["write_file"]["content"]))
        else:
            calls.append(Shell(call["shell"]))
    return calls


# --------------------------------------------------------------------------------------------------
# Requests as logged


Api = Literal["anthropic", "responses", "chat", "gemini"]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    api: Api | None
    # What the server answered: "turn N", "side", "fail <kind>", "head", "not found", ...
    answered: str = ""
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "api": self.api,
            "answered": self.answered,
            "body": self.body,
        }


@dataclass(frozen=True)
class Tool:
    name: str
    kind: Literal["function", "custom", "local_shell"]
    schema: dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One tool call as the wire carries it: `args` for a function tool, `text` for a custom tool."""

    id: str
    name: str
    args: dict[str, Any] | None = None
    text: str | None = None
    kind: Literal["function", "custom", "local_shell"] = "function"


def offered_tools(api: Api, body: Any) -> list[Tool]:
    """The tools a request offers the model, whatever the API's shape."""
    tools: list[Tool] = []
    for tool in body.get("tools") or []:
        if api == "anthropic" and "name" in tool:
            tools.append(Tool(tool["name"], "function", tool.get("input_schema") or {}))
        elif api == "responses":
            kind = tool.get("type")
            if kind == "function":
                tools.append(Tool(tool["name"], "function", tool.get("parameters") or {}))
            elif kind == "custom":
                tools.append(Tool(tool["name"], "custom", {}))
            elif kind == "local_shell":
                tools.append(Tool("local_shell", "local_shell", {}))
        elif api == "chat" and tool.get("type") == "function":
            fn = tool["function"]
            tools.append(Tool(fn["name"], "function", fn.get("parameters") or {}))
        elif api == "gemini":
            for decl in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
                schema = decl.get("parametersJsonSchema") or decl.get("parameters") or {}
                tools.append(Tool(decl["name"], "function", schema))
    return tools


# Preferred tool names, in order, for each action (Claude Code, Gemini CLI, opencode, Codex, others).
WRITE_TOOLS = ("Write", "write_file", "write", "create_file")
SHELL_TOOLS = ("Bash", "run_shell_command", "bash", "shell_command", "shell", "exec_command", "local_shell")
PATCH_TOOLS = ("apply_patch",)


class NoToolError(Exception):
    pass


def _properties(tool: Tool) -> dict[str, Any]:
    props = tool.schema.get("properties")
    return props if isinstance(props, dict) else {}


def _first(tools: list[Tool], names: Sequence[str]) -> Tool | None:
    by_name = {t.name: t for t in tools}
    return next((by_name[n] for n in names if n in by_name), None)


def _shell_call(tools: list[Tool], command: str, call_id: str) -> Call:
    tool = _first(tools, SHELL_TOOLS)
    if tool is None:
        raise NoToolError(f"no shell tool among {[t.name for t in tools]}")
    argv = ["bash", "-lc", command]
    if tool.kind == "local_shell":
        return Call(call_id, "local_shell", args={"command": argv}, kind="local_shell")
    props = _properties(tool)
    args: dict[str, Any] = {}
    if "cmd" in props and "command" not in props:
        args["cmd"] = command
    elif props.get("command", {}).get("type") == "array":
        args["command"] = argv
    else:
        args["command"] = command
    if "description" in props:
        args["description"] = "Run a command"
    return Call(call_id, tool.name, args=args)


def _patch_text(path: str, content: str) -> str:
    lines = content.splitlines()
    return "\n".join(
        ["*** Begin Patch", f"*** Add File: {path}", *("+" + line for line in lines), "*** End Patch"]
    )


def _write_call(tools: list[Tool], action: WriteFile, call_id: str) -> Call:
    tool = _first(tools, WRITE_TOOLS)
    if tool is not None:
        props = _properties(tool)
        key = next((k for k in ("file_path", "filePath", "absolute_path", "path") if k in props), "file_path")
        return Call(call_id, tool.name, args={key: action.path, "content": action.content})
    patch = _first(tools, PATCH_TOOLS)
    if patch is not None:
        text = _patch_text(action.path, action.content)
        if patch.kind == "custom":
            return Call(call_id, patch.name, text=text, kind="custom")
        props = _properties(patch)
        key = next((k for k in ("input", "patch") if k in props), "input")
        return Call(call_id, patch.name, args={key: text})
    # No file tool offered: write through the shell, byte for byte.
    encoded = base64.b64encode(action.content.encode()).decode()
    return _shell_call(tools, f"printf %s {encoded} | base64 -d > {shlex.quote(action.path)}", call_id)


def calls_for(tools: list[Tool], actions: Sequence[Action], ids: Iterator[str]) -> list[Call]:
    calls = []
    for action in actions:
        if isinstance(action, WriteFile):
            calls.append(_write_call(tools, action, next(ids)))
        else:
            calls.append(_shell_call(tools, action.command, next(ids)))
    return calls


def text_edit(actions: Sequence[Action], workdir: str | None, *, whole: bool) -> str:
    """The turn as text for a CLI that edits from the reply (aider): each file in the edit format the
    request asked for (`whole`: a file listing; otherwise a SEARCH/REPLACE block that creates it); a
    shell command as a fenced block aider may offer to run."""
    parts = []
    for action in actions:
        if isinstance(action, WriteFile):
            path = action.path
            if workdir and path.startswith(workdir.rstrip("/") + "/"):
                path = path[len(workdir.rstrip("/")) + 1 :]
            body = action.content if action.content.endswith("\n") else action.content + "\n"
            if whole:
                parts.append(f"{path}\n```\n{body}```\n")
            else:
                parts.append(f"{path}\n```\n<<<<<<< SEARCH\n=======\n{body}>>>>>>> REPLACE\n```\n")
        else:
            parts.append(f"```bash\n{action.command}\n```\n")
    return "\n".join(parts)


def asks_whole_files(body: Any) -> bool:
    """Whether aider asked for its "whole" edit format (a file listing) rather than SEARCH/REPLACE."""
    return any(
        "*file listing*" in _text_of(m.get("content"))
        for m in body.get("messages") or []
        if isinstance(m, dict)
    )


# --------------------------------------------------------------------------------------------------
# Success replies, per API


def _sse(events: Sequence[tuple[str | None, Any]]) -> bytes:
    out = []
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {payload}\n\n")
    return "".join(out).encode()


def anthropic_reply(
    model: str, text: str, calls: Sequence[Call], msg_id: str, stream: bool
) -> tuple[str, bytes]:
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    for call in calls:
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.args or {}})
    stop = "tool_use" if calls else "end_turn"
    usage = {
        "input_tokens": USAGE_INPUT - USAGE_CACHED,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": USAGE_CACHED,
        "output_tokens": USAGE_OUTPUT,
    }
    message = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    if not stream:
        return "application/json", json.dumps(message).encode()
    events: list[tuple[str | None, Any]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **message,
                    "content": [],
                    "stop_reason": None,
                    "usage": {**usage, "output_tokens": 1},
                },
            },
        )
    ]
    for index, block in enumerate(content):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": USAGE_OUTPUT},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "text/event-stream", _sse(events)


def responses_reply(
    model: str, text: str, calls: Sequence[Call], resp_id: str, stream: bool
) -> tuple[str, bytes]:
    items: list[dict[str, Any]] = []
    if text:
        items.append(
            {
                "id": f"msg_{resp_id}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for call in calls:
        if call.kind == "custom":
            items.append(
                {
                    "id": f"ctc_{call.id}",
                    "type": "custom_tool_call",
                    "status": "completed",
                    "call_id": call.id,
                    "name": call.name,
                    "input": call.text,
                }
            )
        elif call.kind == "local_shell":
            items.append(
                {
                    "id": f"lsh_{call.id}",
                    "type": "local_shell_call",
                    "status": "completed",
                    "call_id": call.id,
                    "action": {"type": "exec", **(call.args or {})},
                }
            )
        else:
            items.append(
                {
                    "id": f"fc_{call.id}",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": json.dumps(call.args or {}),
                }
            )
    usage = {
        "input_tokens": USAGE_INPUT,
        "input_tokens_details": {"cached_tokens": USAGE_CACHED},
        "output_tokens": USAGE_OUTPUT,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": USAGE_INPUT + USAGE_OUTPUT,
    }
    created = int(time.time())
    response = {
        "id": resp_id,
        "object": "response",
        "created_at": created,
        "status": "completed",
        "model": model,
        "output": items,
        "usage": usage,
    }
    if not stream:
        return "application/json", json.dumps(response).encode()
    seq = itertools.count()
    events: list[tuple[str | None, Any]] = [
        (
            "response.created",
            {
                "type": "response.created",
                "sequence_number": next(seq),
                "response": {**response, "status": "in_progress", "output": [], "usage": None},
            },
        )
    ]
    for index, item in enumerate(items):
        events.append(
            (
                "response.output_item.added",
                {
                    "type": "response.output_item.added",
                    "sequence_number": next(seq),
                    "output_index": index,
                    "item": item,
                },
            )
        )
        if item["type"] == "message":
            events.append(
                (
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "delta": text,
                    },
                )
            )
        events.append(
            (
                "response.output_item.done",
                {
                    "type": "response.output_item.done",
                    "sequence_number": next(seq),
                    "output_index": index,
                    "item": item,
                },
            )
        )
    events.append(
        (
            "response.completed",
            {"type": "response.completed", "sequence_number": next(seq), "response": response},
        )
    )
    return "text/event-stream", _sse(events)


def chat_reply(model: str, text: str, calls: Sequence[Call], chat_id: str, body: Any) -> tuple[str, bytes]:
    tool_calls = [
        {
            "index": i,
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.args or {})},
        }
        for i, c in enumerate(calls)
    ]
    finish = "tool_calls" if calls else "stop"
    usage = {
        "prompt_tokens": USAGE_INPUT,
        "completion_tokens": USAGE_OUTPUT,
        "total_tokens": USAGE_INPUT + USAGE_OUTPUT,
        "prompt_tokens_details": {"cached_tokens": USAGE_CACHED},
    }
    created = int(time.time())
    base = {"id": chat_id, "created": created, "model": model}
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            message["tool_calls"] = [{k: v for k, v in tc.items() if k != "index"} for tc in tool_calls]
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return "application/json", json.dumps(
            {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        ).encode()
    chunk = {**base, "object": "chat.completion.chunk"}
    delta: dict[str, Any] = {"role": "assistant", "content": text or ""}
    if tool_calls:
        delta["tool_calls"] = tool_calls
    events: list[tuple[str | None, Any]] = [
        (None, {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}),
        (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}),
    ]
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append((None, {**chunk, "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return "text/event-stream", _sse(events)


def gemini_reply(
    model: str, text: str, calls: Sequence[Call], resp_id: str, stream: bool, sse: bool
) -> tuple[str, bytes]:
    parts: list[dict[str, Any]] = []
    if text:
        parts.append({"text": text})
    for call in calls:
        parts.append({"functionCall": {"id": call.id, "name": call.name, "args": call.args or {}}})
    response = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {
            "promptTokenCount": USAGE_INPUT,
            "candidatesTokenCount": USAGE_OUTPUT,
            "totalTokenCount": USAGE_INPUT + USAGE_OUTPUT,
            "cachedContentTokenCount": USAGE_CACHED,
        },
        "modelVersion": model,
        "responseId": resp_id,
    }
    if stream and sse:
        return "text/event-stream", _sse([(None, response)])
    if stream:
        return "application/json", json.dumps([response]).encode()
    return "application/json", json.dumps(response).encode()


# --------------------------------------------------------------------------------------------------
# Error replies, per API: each provider's documented status, body and headers


def _rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: int) -> str:
    """OpenAI's x-ratelimit-reset-* form: 20s, 6m0s, 1h2m3s."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass(frozen=True)
class ErrorReply:
    status: int
    headers: dict[str, str]
    body: Any


ANTHROPIC_RATE_MESSAGE = (
    "This request would exceed the rate limit for your organization of 50 requests per minute. "
    "For details, refer to: https://docs.claude.com/en/api/rate-limits. "
    "You can see the response headers for current usage. "
    "Please reduce the prompt length or the maximum tokens requested, or try again later."
)
OPENAI_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. "
    "For more information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)


def anthropic_error(fail: Fail, now: datetime, request_id: str) -> ErrorReply:
    reset = now + timedelta(seconds=fail.retry_after)

    def body(kind: str, message: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}

    headers = {"request-id": request_id}
    if fail.kind == "rate_limit":
        for bucket, limit in (
            ("requests", "50"),
            ("tokens", "40000"),
            ("input-tokens", "30000"),
            ("output-tokens", "8000"),
        ):
            headers[f"anthropic-ratelimit-{bucket}-limit"] = limit
            headers[f"anthropic-ratelimit-{bucket}-remaining"] = "0" if bucket == "requests" else limit
            headers[f"anthropic-ratelimit-{bucket}-reset"] = _rfc3339(reset if bucket == "requests" else now)
        headers["retry-after"] = str(fail.retry_after)
        return ErrorReply(429, headers, body("rate_limit_error", ANTHROPIC_RATE_MESSAGE))
    if fail.kind == "usage_limit":
        # A Claude plan's limit: the unified limiter refuses, naming its window and when it reopens.
        epoch = str(int((now + timedelta(seconds=fail.reset_in)).timestamp()))
        headers.update(
            {
                "anthropic-ratelimit-unified-status": "rejected",
                "anthropic-ratelimit-unified-reset": epoch,
                "anthropic-ratelimit-unified-representative-claim": "five_hour",
                "anthropic-ratelimit-unified-5h-status": "rejected",
                "anthropic-ratelimit-unified-5h-reset": epoch,
                "anthropic-ratelimit-unified-5h-utilization": "1.0",
                "anthropic-ratelimit-unified-fallback": "unavailable",
            }
        )
        return ErrorReply(429, headers, body("rate_limit_error", "Usage limit reached"))
    if fail.kind == "insufficient_quota":
        message = (
            "Your credit balance is too low to access the Anthropic API. "
            "Please go to Plans & Billing to upgrade or purchase credits."
        )
        return ErrorReply(400, headers, body("invalid_request_error", message))
    if fail.kind == "spend_limit":
        when = (now + timedelta(seconds=fail.reset_in)).strftime("%Y-%m-%d at %H:%M UTC")
        message = f"You have reached your specified API usage limits. You will regain access on {when}."
        return ErrorReply(400, headers, body("invalid_request_error", message))
    if fail.kind == "overloaded":
        return ErrorReply(529, headers, body("overloaded_error", "Overloaded"))
    return ErrorReply(500, headers, body("api_error", "Internal server error"))


def openai_error(fail: Fail, now: datetime, request_id: str) -> ErrorReply:
    headers = {"x-request-id": request_id}

    def body(message: str, kind: str, code: str | None) -> dict[str, Any]:
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    if fail.kind == "rate_limit":
        headers.update(
            {
                "retry-after": str(fail.retry_after),
                "x-ratelimit-limit-requests": "500",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": _duration(fail.retry_after),
                "x-ratelimit-limit-tokens": "30000",
                "x-ratelimit-remaining-tokens": "29000",
                "x-ratelimit-reset-tokens": "1s",
            }
        )
        message = (
            "Rate limit reached for gpt-5 in organization org-test on requests per min (RPM): "
            f"Limit 500, Used 500, Requested 1. Please try again in {fail.retry_after}s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        return ErrorReply(429, headers, body(message, "requests", "rate_limit_exceeded"))
    if fail.kind in ("insufficient_quota", "spend_limit"):
        return ErrorReply(
            429, headers, body(OPENAI_QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota")
        )
    if fail.kind == "usage_limit":
        # What a ChatGPT plan answers Codex when its window is spent (codex-rs/codex-api api_bridge.rs).
        resets = now + timedelta(seconds=fail.reset_in)
        error = {
            "type": "usage_limit_reached",
            "message": "The usage limit has been reached",
            "plan_type": "plus",
            "resets_at": int(resets.timestamp()),
            "resets_in_seconds": fail.reset_in,
        }
        return ErrorReply(429, headers, {"error": error})
    if fail.kind == "overloaded":
        return ErrorReply(
            503,
            headers,
            body("The server is overloaded. Please try again later.", "server_error", "server_is_overloaded"),
        )
    return ErrorReply(
        500,
        headers,
        body(
            "The server had an error while processing your request. Sorry about that!", "server_error", None
        ),
    )


def gemini_error(fail: Fail, now: datetime, request_id: str, model: str) -> ErrorReply:
    del now, request_id
    if fail.kind == "rate_limit":
        quota_id, metric, delay = (
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "generate_content_free_tier_requests",
            fail.retry_after,
        )
    elif fail.kind in ("usage_limit", "insufficient_quota", "spend_limit"):
        quota_id, metric, delay = (
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            "generate_content_free_tier_requests",
            fail.reset_in,
        )
    elif fail.kind == "overloaded":
        return ErrorReply(
            503,
            {},
            {
                "error": {
                    "code": 503,
                    "message": "The model is overloaded. Please try again later.",
                    "status": "UNAVAILABLE",
                }
            },
        )
    else:
        return ErrorReply(
            500,
            {},
            {
                "error": {
                    "code": 500,
                    "message": "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
                    "status": "INTERNAL",
                }
            },
        )
    message = (
        "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n"
        f"* Quota exceeded for metric: generativelanguage.googleapis.com/{metric}, "
        f"limit: 50, model: {model}\n"
        f"Please retry in {delay}s."
    )
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": f"generativelanguage.googleapis.com/{metric}",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": "50",
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay}s"},
    ]
    return ErrorReply(
        429,
        {},
        {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": details}},
    )


# --------------------------------------------------------------------------------------------------
# The server


def api_of(path: str) -> Api | None:
    if path.endswith("/messages"):
        return "anthropic"
    if path.endswith("/responses"):
        return "responses"
    if path.endswith("/chat/completions"):
        return "chat"
    if ":generateContent" in path or ":streamGenerateContent" in path:
        return "gemini"
    return None


class ModelServer:
    """A scripted model on 127.0.0.1 and a free port; a context manager (start, then stop)."""

    def __init__(
        self,
        script: Sequence[Turn] = (),
        *,
        text_edits: bool = False,
        workdir: str | None = None,
        log_path: str | None = None,
    ) -> None:
        self.script = list(script)
        self.text_edits = text_edits
        self.workdir = workdir
        self.log_path = log_path
        self.requests: list[Request] = []
        self.problems: list[str] = []  # turns the server could not map onto the offered tools
        self._position = 0
        self._fail_count = 0
        self._lock = threading.Lock()
        self._ids = (f"call_{n:03d}" for n in itertools.count(1))
        self._replies = itertools.count(1)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> ModelServer:
        server = self

        class Handler(_Handler):
            model_server = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="model-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, without a path: Anthropic and Gemini clients add theirs."""
        return f"http://127.0.0.1:{self.port}"

    # -- what the CLI sent

    def model_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.api is not None]

    def tool_results(self) -> list[str]:
        """Every tool result the CLI sent back, as text, in order (each distinct result once)."""
        seen: list[str] = []
        for request in self.model_requests():
            for text in _tool_results(request.api, request.body):
                if text not in seen:
                    seen.append(text)
        return seen

    # -- answering

    def _next_turn(self, consumes: bool) -> tuple[int, Turn] | None:
        """The turn this request gets: a Fail answers any request, other turns only a consuming one."""
        with self._lock:
            index = self._position
            turn = self.script[index] if index < len(self.script) else FINAL
            if isinstance(turn, Fail):
                self._fail_count += 1
                if turn.times is not None and self._fail_count >= turn.times:
                    self._position += 1
                    self._fail_count = 0
                return index, turn
            if not consumes:
                return None
            self._position += 1
            return index, turn

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
            if self.log_path:
                with open(self.log_path, "a") as log:
                    log.write(json.dumps(request.to_json()) + "\n")

    def answer(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one model request."""
        api = request.api
        assert api is not None
        body = request.body if isinstance(request.body, dict) else {}
        model = str(body.get("model") or _gemini_model(request.path) or "scripted-model")
        tools = offered_tools(api, body)
        consumes = bool(tools) or self.text_edits
        picked = self._next_turn(consumes)
        reply_id = f"{next(self._replies):04d}"
        now = datetime.now(UTC)
        if picked is None:
            request.answered = "side"
            text, calls = _side_text(api, body), []
        else:
            index, turn = picked
            if isinstance(turn, Fail):
                request.answered = f"fail {turn.kind} (turn {index})"
                return self._error(api, turn, now, reply_id, model)
            request.answered = f"turn {index}"
            if isinstance(turn, Answer):
                text, calls = turn.text, []
            elif self.text_edits:
                text, calls = text_edit(turn, self.workdir, whole=asks_whole_files(body)), []
            else:
                try:
                    text, calls = "", calls_for(tools, turn, self._ids)
                except NoToolError as exc:
                    self.problems.append(f"turn {index}: {exc}")
                    text, calls = f"(scripted model: {exc})", []
        return self._success(api, request, body, model, text, calls, reply_id)

    def _success(
        self, api: Api, request: Request, body: Any, model: str, text: str, calls: list[Call], reply_id: str
    ) -> tuple[int, dict[str, str], bytes]:
        stream = bool(body.get("stream"))
        if api == "anthropic":
            ctype, data = anthropic_reply(model, text, calls, f"msg_{reply_id}", stream)
            headers = {"request-id": f"req_{reply_id}"}
        elif api == "responses":
            ctype, data = responses_reply(model, text, calls, f"resp_{reply_id}", stream)
            headers = {"x-request-id": f"req_{reply_id}"}
        elif api == "chat":
            ctype, data = chat_reply(model, text, calls, f"chatcmpl-{reply_id}", body)
            headers = {"x-request-id": f"req_{reply_id}"}
        else:
            streaming = ":streamGenerateContent" in request.path
            sse = request.query.get("alt") == ["sse"]
            ctype, data = gemini_reply(model, text, calls, f"resp_{reply_id}", streaming, sse)
            headers = {}
        return 200, {"content-type": ctype, **headers}, data

    def _error(
        self, api: Api, fail: Fail, now: datetime, reply_id: str, model: str
    ) -> tuple[int, dict[str, str], bytes]:
        request_id = f"req_{reply_id}"
        if api == "anthropic":
            reply = anthropic_error(fail, now, request_id)
        elif api == "gemini":
            reply = gemini_error(fail, now, request_id, model)
        else:
            reply = openai_error(fail, now, request_id)
        if fail.in_stream and api in ("anthropic", "responses"):
            return (
                200,
                {"content-type": "text/event-stream", **reply.headers},
                _stream_error(api, reply, reply_id, model),
            )
        return (
            reply.status,
            {"content-type": "application/json", **reply.headers},
            json.dumps(reply.body).encode(),
        )


def _stream_error(api: Api, reply: ErrorReply, reply_id: str, model: str) -> bytes:
    if api == "anthropic":
        return _sse([("error", reply.body)])
    error = reply.body["error"]
    response = {
        "id": f"resp_{reply_id}",
        "object": "response",
        "status": "failed",
        "model": model,
        "output": [],
        "error": error,
    }
    return _sse(
        [
            (
                "response.created",
                {
                    "type": "response.created",
                    "sequence_number": 0,
                    "response": {**response, "status": "in_progress", "error": None},
                },
            ),
            ("response.failed", {"type": "response.failed", "sequence_number": 1, "response": response}),
        ]
    )


def _gemini_model(path: str) -> str | None:
    if "/models/" in path:
        return path.split("/models/", 1)[1].split(":", 1)[0]
    return None


def _side_text(api: Api, body: Any) -> str:
    """A reply to a request that is not a turn of the conversation (a title, a classification)."""
    config = body.get("generationConfig") or {}
    if api == "gemini" and config.get("responseMimeType") == "application/json":
        # Gemini CLI's router and next-speaker check ask for JSON of a given schema: fill it in.
        schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
        return json.dumps(_example(schema))
    return SIDE_TEXT


def _example(schema: Any) -> Any:
    """A value of the JSON schema's shape: the first enum value, 1, "scripted", an object of examples."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: _example(sub) for name, sub in props.items()}
    if kind == "array":
        return [_example(schema.get("items"))]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return False
    return "scripted"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            _text_of(part.get("text", part.get("content", ""))) if isinstance(part, dict) else str(part)
            for part in content
        )
    if isinstance(content, dict):
        return json.dumps(content)
    return "" if content is None else str(content)


def _tool_results(api: Api | None, body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    results: list[str] = []
    if api == "anthropic":
        for message in body.get("messages") or []:
            if isinstance(message.get("content"), list):
                for block in message["content"]:
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        results.append(_text_of(block.get("content")))
    elif api == "responses":
        for item in body.get("input") or []:
            if isinstance(item, dict) and item.get("type") in (
                "function_call_output",
                "custom_tool_call_output",
                "local_shell_call_output",
            ):
                results.append(_text_of(item.get("output")))
    elif api == "chat":
        for message in body.get("messages") or []:
            if message.get("role") == "tool":
                results.append(_text_of(message.get("content")))
    elif api == "gemini":
        for content in body.get("contents") or []:
            for part in content.get("parts") or []:
                if isinstance(part, dict) and "functionResponse" in part:
                    results.append(json.dumps(part["functionResponse"].get("response")))
    return results


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A CLI that gives up closes its connection mid-request: that is its business, not a failure here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    model_server: ModelServer
    protocol_version = "HTTP/1.1"
    server_version = "scripted-model/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        pass  # the request log is the record; stderr would only clutter test output

    def _request(self, body: Any) -> Request:
        split = urlsplit(self.path)
        return Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            api=api_of(split.path) if self.command == "POST" else None,
        )

    def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        request = self._request(None)
        request.answered = "head"
        self.model_server._record(request)
        self._send(200, {"content-type": "text/plain"}, b"")

    def do_GET(self) -> None:
        request = self._request(None)
        split = urlsplit(self.path)
        if split.path.endswith("/models"):
            request.answered = "models"
            self.model_server._record(request)
            data = json.dumps({"object": "list", "data": [], "models": []}).encode()
            self._send(200, {"content-type": "application/json"}, data)
            return
        request.answered = "not found"
        self.model_server._record(request)
        self._send(404, {"content-type": "application/json"}, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        request = self._request(body)
        if request.api is None:
            split = urlsplit(self.path)
            if split.path.endswith(":countTokens") or split.path.endswith("/count_tokens"):
                request.answered = "count tokens"
                self.model_server._record(request)
                data = json.dumps({"totalTokens": USAGE_INPUT, "input_tokens": USAGE_INPUT}).encode()
                self._send(200, {"content-type": "application/json"}, data)
                return
            request.answered = "not found"
            self.model_server._record(request)
            self._send(404, {"content-type": "application/json"}, b'{"error": {"message": "not found"}}')
            return
        status, headers, data = self.model_server.answer(request)
        self.model_server._record(request)
        self._send(status, headers, data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a scripted model on 127.0.0.1 until interrupted.")
    parser.add_argument("--script", help="a JSON file: a list of turns (see turn_from_json)")
    parser.add_argument("--log", help="append every request to this JSON-lines file")
    parser.add_argument("--text-edits", action="store_true", help="answer turns as text edits (aider)")
    parser.add_argument("--workdir", help="make text-edit paths relative to this directory")
    args = parser.parse_args(argv)
    script: list[Turn] = []
    if args.script:
        with open(args.script) as f:
            script = [turn_from_json(t) for t in json.load(f)]
    server = ModelServer(script, text_edits=args.text_edits, workdir=args.workdir, log_path=args.log).start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
