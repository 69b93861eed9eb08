"""The scripted model server, driven by a plain HTTP client: each API's wire format, the script's
progress, the error replies, the request log."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from model_server import (
    USAGE_CACHED,
    USAGE_INPUT,
    USAGE_OUTPUT,
    Answer,
    Fail,
    ModelServer,
    Shell,
    WriteFile,
    turn_from_json,
)

ANTHROPIC_TOOLS = [
    {"name": "Write", "input_schema": {"type": "object", "properties": {"file_path": {}, "content": {}}}},
    {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {}, "description": {}}}},
]


def post(
    server: ModelServer, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def sse(data: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) per SSE event."""
    events = []
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        name = None
        payload = ""
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                payload += line[len("data: ") :]
        events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return events


def anthropic(
    server: ModelServer, messages: list[Any], *, tools: list[Any] | None = None
) -> list[tuple[str | None, Any]]:
    body = {
        "model": "claude-test",
        "stream": True,
        "messages": messages,
        "tools": ANTHROPIC_TOOLS if tools is None else tools,
    }
    status, headers, data = post(server, "/v1/messages?beta=true", body)
    assert status == 200, data
    assert headers["content-type"] == "text/event-stream"
    return sse(data)


def test_anthropic_plays_the_script_as_tool_calls_and_logs_every_request(tmp_path: Path) -> None:
    target = str(tmp_path / "hello.txt")
    script = [[WriteFile(target, "hi\n"), Shell("python3 -c 'print(42)'")], Answer("All done.")]
    with ModelServer(script) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("HEAD", "/")
        assert conn.getresponse().status == 200
        conn.close()

        events = anthropic(server, [{"role": "user", "content": "go"}])
        names = [name for name, _ in events]
        assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
        starts = [data["content_block"] for name, data in events if name == "content_block_start"]
        assert [(b["type"], b["name"]) for b in starts] == [("tool_use", "Write"), ("tool_use", "Bash")]
        inputs = [
            json.loads(data["delta"]["partial_json"])
            for name, data in events
            if name == "content_block_delta"
        ]
        assert inputs == [
            {"file_path": target, "content": "hi\n"},
            {"command": "python3 -c 'print(42)'", "description": "Run a command"},
        ]
        delta = next(data for name, data in events if name == "message_delta")
        assert delta["delta"]["stop_reason"] == "tool_use"
        assert delta["usage"]["output_tokens"] == USAGE_OUTPUT

        ids = [b["id"] for b in starts]
        results = [{"type": "tool_result", "tool_use_id": ids[0], "content": "written"}]
        results.append(
            {"type": "tool_result", "tool_use_id": ids[1], "content": [{"type": "text", "text": "42\n"}]}
        )
        history = [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": starts},
            {"role": "user", "content": results},
        ]
        events = anthropic(server, history)
        texts = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
        assert texts == ["All done."]
        assert (
            next(data for name, data in events if name == "message_delta")["delta"]["stop_reason"]
            == "end_turn"
        )

        # Past the end of the script every turn is the final answer.
        events = anthropic(server, history)
        assert [data["delta"]["text"] for name, data in events if name == "content_block_delta"] == ["Done."]

    assert [(r.method, r.path, r.answered) for r in server.requests] == [
        ("HEAD", "/", "head"),
        ("POST", "/v1/messages", "turn 0"),
        ("POST", "/v1/messages", "turn 1"),
        ("POST", "/v1/messages", "turn 2"),
    ]
    assert server.requests[1].query == {"beta": ["true"]}
    assert server.requests[1].body["messages"] == [{"role": "user", "content": "go"}]
    assert server.tool_results() == ["written", "42\n"]
    assert server.problems == []


def test_a_request_without_tools_gets_a_side_reply_and_does_not_consume_a_turn() -> None:
    with ModelServer([Answer("the real answer")]) as server:
        side = anthropic(server, [{"role": "user", "content": "title?"}], tools=[])
        assert [d["delta"]["text"] for n, d in side if n == "content_block_delta"] == ["Scripted reply"]
        turn = anthropic(server, [{"role": "user", "content": "go"}])
        assert [d["delta"]["text"] for n, d in turn if n == "content_block_delta"] == ["the real answer"]
    assert [r.answered for r in server.requests] == ["side", "turn 0"]


def test_anthropic_without_stream_answers_one_message() -> None:
    with ModelServer([[Shell("true")]]) as server:
        body = {"model": "m", "messages": [], "tools": ANTHROPIC_TOOLS}
        status, headers, data = post(server, "/v1/messages", body)
    message = json.loads(data)
    assert status == 200 and headers["content-type"] == "application/json"
    assert message["stop_reason"] == "tool_use"
    assert message["content"][0]["input"] == {"command": "true", "description": "Run a command"}
    assert message["usage"]["input_tokens"] + message["usage"]["cache_read_input_tokens"] == USAGE_INPUT


CODEX_TOOLS = [
    {
        "type": "function",
        "name": "exec_command",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
    },
    {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
    {"type": "web_search"},
]


def test_responses_api_streams_function_and_custom_tool_calls() -> None:
    script = [[WriteFile("/w/a.txt", "one\ntwo\n"), Shell("ls")], Answer("ok")]
    with ModelServer(script) as server:
        status, _, data = post(
            server, "/v1/responses", {"model": "gpt-5.5", "stream": True, "input": [], "tools": CODEX_TOOLS}
        )
        assert status == 200
        events = sse(data)
        assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
        assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
        items = [d["item"] for n, d in events if n == "response.output_item.done"]
        assert items[0]["type"] == "custom_tool_call" and items[0]["name"] == "apply_patch"
        assert items[0]["input"] == "*** Begin Patch\n*** Add File: /w/a.txt\n+one\n+two\n*** End Patch"
        assert items[1]["type"] == "function_call" and json.loads(items[1]["arguments"]) == {"cmd": "ls"}
        usage = events[-1][1]["response"]["usage"]
        assert usage == {
            "input_tokens": USAGE_INPUT,
            "input_tokens_details": {"cached_tokens": USAGE_CACHED},
            "output_tokens": USAGE_OUTPUT,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": USAGE_INPUT + USAGE_OUTPUT,
        }
        outputs = [
            {"type": "custom_tool_call_output", "call_id": items[0]["call_id"], "output": "patched"},
            {"type": "function_call_output", "call_id": items[1]["call_id"], "output": "a.txt\n"},
        ]
        status, _, data = post(
            server,
            "/v1/responses",
            {"model": "gpt-5.5", "stream": True, "input": outputs, "tools": CODEX_TOOLS},
        )
        done = [d["item"] for n, d in sse(data) if n == "response.output_item.done"]
        assert done[0]["type"] == "message" and done[0]["content"][0]["text"] == "ok"
    assert server.tool_results() == ["patched", "a.txt\n"]


def test_without_a_file_tool_a_write_goes_through_the_shell_byte_for_byte(tmp_path: Path) -> None:
    """The fallback command really writes the file: run it as a CLI would."""
    target = tmp_path / "odd name's.txt"
    content = "quotes ' \" $HOME `x` and a tab\t\n"
    with ModelServer([[WriteFile(str(target), content)]]) as server:
        tools = [CODEX_TOOLS[0]]
        _, _, data = post(
            server, "/v1/responses", {"model": "m", "stream": True, "input": [], "tools": tools}
        )
    item = next(d["item"] for n, d in sse(data) if n == "response.output_item.done")
    command = json.loads(item["arguments"])["cmd"]
    subprocess.run(["bash", "-c", command], check=True, cwd=tmp_path)
    assert target.read_text() == content


def test_chat_completions_streams_tool_calls_and_usage_only_when_asked() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "write",
                "parameters": {"type": "object", "properties": {"filePath": {}, "content": {}}},
            },
        },
        {
            "type": "function",
            "function": {
                "name": "bash",
                "parameters": {"type": "object", "properties": {"command": {}, "description": {}}},
            },
        },
    ]
    with ModelServer([[WriteFile("/w/x", "x")], [Shell("echo 42")]]) as server:
        body = {
            "model": "m",
            "stream": True,
            "messages": [],
            "tools": tools,
            "stream_options": {"include_usage": True},
        }
        status, _, data = post(server, "/v1/chat/completions", body)
        events = sse(data)
        assert status == 200 and events[-1] == (None, "[DONE]")
        call = events[0][1]["choices"][0]["delta"]["tool_calls"][0]
        assert call["function"]["name"] == "write"
        assert json.loads(call["function"]["arguments"]) == {"filePath": "/w/x", "content": "x"}
        assert events[1][1]["choices"][0]["finish_reason"] == "tool_calls"
        assert events[2][1]["usage"]["prompt_tokens"] == USAGE_INPUT

        messages = [{"role": "tool", "tool_call_id": call["id"], "content": "Wrote file successfully."}]
        _, _, data = post(
            server,
            "/v1/chat/completions",
            {"model": "m", "stream": True, "messages": messages, "tools": tools},
        )
        events = sse(data)
        assert not any("usage" in d for _, d in events if isinstance(d, dict))
        call = events[0][1]["choices"][0]["delta"]["tool_calls"][0]
        assert json.loads(call["function"]["arguments"]) == {
            "command": "echo 42",
            "description": "Run a command",
        }
    assert server.tool_results() == ["Wrote file successfully."]


GEMINI_TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "write_file",
                "parametersJsonSchema": {"type": "object", "properties": {"file_path": {}, "content": {}}},
            },
            {
                "name": "run_shell_command",
                "parametersJsonSchema": {"type": "object", "properties": {"command": {}, "description": {}}},
            },
        ]
    }
]


def test_gemini_streams_function_calls_and_fills_in_a_json_schema_for_side_requests() -> None:
    with ModelServer([[Shell("echo hi")], Answer("bye")]) as server:
        router = {
            "contents": [],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {
                    "type": "OBJECT",
                    "properties": {
                        "complexity_reasoning": {"type": "STRING"},
                        "complexity_score": {"type": "INTEGER"},
                    },
                },
            },
        }
        status, _, data = post(server, "/v1beta/models/flash-lite:generateContent", router)
        text = json.loads(data)["candidates"][0]["content"]["parts"][0]["text"]
        assert status == 200 and json.loads(text) == {
            "complexity_reasoning": "scripted",
            "complexity_score": 1,
        }

        body = {"contents": [{"role": "user", "parts": [{"text": "go"}]}], "tools": GEMINI_TOOLS}
        status, headers, data = post(server, "/v1beta/models/pro:streamGenerateContent?alt=sse", body)
        assert status == 200 and headers["content-type"] == "text/event-stream"
        ((_, chunk),) = sse(data)
        call = chunk["candidates"][0]["content"]["parts"][0]["functionCall"]
        assert (call["name"], call["args"]) == (
            "run_shell_command",
            {"command": "echo hi", "description": "Run a command"},
        )
        assert chunk["usageMetadata"]["promptTokenCount"] == USAGE_INPUT and chunk["modelVersion"] == "pro"

        reply = {
            "role": "user",
            "parts": [{"functionResponse": {"name": "run_shell_command", "response": {"output": "hi"}}}],
        }
        status, _, data = post(
            server, "/v1beta/models/pro:streamGenerateContent", {"contents": [reply], "tools": GEMINI_TOOLS}
        )
        assert json.loads(data)[0]["candidates"][0]["content"]["parts"] == [{"text": "bye"}]
    assert server.tool_results() == ['{"output": "hi"}']
    assert [r.answered for r in server.requests] == ["side", "turn 0", "turn 1"]


def test_a_turn_no_offered_tool_can_carry_is_reported_as_a_problem() -> None:
    with ModelServer([[Shell("ls")]]) as server:
        tools = [{"name": "Read", "input_schema": {}}]
        events = anthropic(server, [], tools=tools)
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert "no shell tool" in text
    assert server.problems == ["turn 0: no shell tool among ['Read']"]


def test_text_edits_follow_the_edit_format_the_request_asks_for(tmp_path: Path) -> None:
    target = str(tmp_path / "src" / "a.py")
    whole = [{"role": "user", "content": "You MUST use this *file listing* format:"}]
    with ModelServer(
        [[WriteFile(target, "x = 1\n")], [WriteFile(target, "x = 2")]], text_edits=True, workdir=str(tmp_path)
    ) as server:
        _, _, data = post(server, "/v1/chat/completions", {"model": "m", "messages": whole})
        assert json.loads(data)["choices"][0]["message"]["content"] == "src/a.py\n```\nx = 1\n```\n"
        _, _, data = post(
            server, "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "go"}]}
        )
        reply = json.loads(data)["choices"][0]["message"]["content"]
        assert reply == "src/a.py\n```\n<<<<<<< SEARCH\n=======\nx = 2\n>>>>>>> REPLACE\n```\n"


# -- errors


def test_anthropic_rate_limit_has_the_documented_body_and_headers_then_the_script_goes_on() -> None:
    with ModelServer([Fail("rate_limit", times=2, retry_after=7), Answer("after")]) as server:
        before = time.time()
        for _ in range(2):
            status, headers, data = post(server, "/v1/messages", {"messages": [], "tools": ANTHROPIC_TOOLS})
            assert status == 429
            body = json.loads(data)
            assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
            assert body["request_id"] == headers["request-id"]
            assert headers["retry-after"] == "7"
            assert headers["anthropic-ratelimit-requests-remaining"] == "0"
            reset = (
                time.mktime(
                    time.strptime(headers["anthropic-ratelimit-requests-reset"], "%Y-%m-%dT%H:%M:%SZ")
                )
                - time.timezone
            )
            assert before + 5 <= reset <= time.time() + 8
        events = anthropic(server, [])
        assert [d["delta"]["text"] for n, d in events if n == "content_block_delta"] == ["after"]
    assert [r.answered for r in server.requests] == ["fail rate_limit (turn 0)"] * 2 + ["turn 1"]


def test_a_fail_without_times_answers_every_request_even_without_tools() -> None:
    with ModelServer([Fail("server_error", times=None)]) as server:
        statuses = [
            post(server, "/v1/messages", {"messages": [], "tools": tools})[0]
            for tools in ([], ANTHROPIC_TOOLS, [])
        ]
    assert statuses == [500, 500, 500]


def test_anthropic_usage_limit_carries_the_unified_limiter_headers() -> None:
    with ModelServer([Fail("usage_limit", reset_in=7200)]) as server:
        status, headers, _ = post(server, "/v1/messages", {"messages": []})
    assert status == 429
    assert headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert headers["anthropic-ratelimit-unified-representative-claim"] == "five_hour"
    assert abs(int(headers["anthropic-ratelimit-unified-reset"]) - (time.time() + 7200)) < 5


@pytest.mark.parametrize(
    ("kind", "status", "body_type", "message_start"),
    [
        ("insufficient_quota", 400, "invalid_request_error", "Your credit balance is too low"),
        ("spend_limit", 400, "invalid_request_error", "You have reached your specified API usage limits."),
        ("overloaded", 529, "overloaded_error", "Overloaded"),
        ("server_error", 500, "api_error", "Internal server error"),
    ],
)
def test_anthropic_other_errors(kind: Any, status: int, body_type: str, message_start: str) -> None:
    with ModelServer([Fail(kind)]) as server:
        got, _, data = post(server, "/v1/messages", {"messages": []})
    assert got == status
    error = json.loads(data)["error"]
    assert error["type"] == body_type and error["message"].startswith(message_start)


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/chat/completions"])
def test_openai_rate_limit_and_quota_errors(path: str) -> None:
    with ModelServer(
        [Fail("rate_limit", retry_after=20), Fail("insufficient_quota"), Fail("usage_limit", reset_in=600)]
    ) as server:
        status, headers, data = post(server, path, {"model": "m", "input": []})
        assert status == 429 and json.loads(data)["error"]["code"] == "rate_limit_exceeded"
        assert headers["retry-after"] == "20" and headers["x-ratelimit-reset-requests"] == "20s"
        assert headers["x-ratelimit-remaining-requests"] == "0"

        status, headers, data = post(server, path, {"model": "m", "input": []})
        error = json.loads(data)["error"]
        assert status == 429 and error["code"] == error["type"] == "insufficient_quota"
        assert "retry-after" not in headers

        status, _, data = post(server, path, {"model": "m", "input": []})
        error = json.loads(data)["error"]
        assert status == 429 and error["type"] == "usage_limit_reached"
        assert abs(error["resets_at"] - (time.time() + 600)) < 5 and error["resets_in_seconds"] == 600


def test_responses_error_in_stream_is_a_response_failed_event() -> None:
    with ModelServer([Fail("insufficient_quota", in_stream=True)]) as server:
        status, _, data = post(server, "/v1/responses", {"model": "m", "stream": True, "input": []})
    events = sse(data)
    assert status == 200 and [n for n, _ in events] == ["response.created", "response.failed"]
    assert events[1][1]["response"]["error"]["code"] == "insufficient_quota"


@pytest.mark.parametrize(
    ("kind", "quota_id", "delay"), [("rate_limit", "PerMinute", "9s"), ("usage_limit", "PerDay", "3600s")]
)
def test_gemini_quota_errors_carry_quota_failure_and_retry_info(kind: Any, quota_id: str, delay: str) -> None:
    with ModelServer([Fail(kind, retry_after=9, reset_in=3600)]) as server:
        status, _, data = post(server, "/v1beta/models/pro:streamGenerateContent?alt=sse", {"contents": []})
    error = json.loads(data)["error"]
    assert status == 429 and error["status"] == "RESOURCE_EXHAUSTED" and error["code"] == 429
    details = {d["@type"].rsplit(".", 1)[1]: d for d in error["details"]}
    assert quota_id in details["QuotaFailure"]["violations"][0]["quotaId"]
    assert details["RetryInfo"]["retryDelay"] == delay
    assert error["message"].endswith(f"Please retry in {delay}.")


def test_unknown_paths_are_logged_and_answered_404() -> None:
    with ModelServer() as server:
        status, _, _ = post(server, "/v2/other", {"x": 1})
    assert status == 404
    assert [(r.path, r.answered, r.api) for r in server.requests] == [("/v2/other", "not found", None)]


def test_the_server_listens_on_loopback_only_and_writes_a_json_lines_log(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with ModelServer([Answer("x")], log_path=str(log)) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server._httpd is not None and server._httpd.server_address[0] == "127.0.0.1"
        post(server, "/v1/messages", {"messages": [], "tools": ANTHROPIC_TOOLS}, {"x-api-key": "k"})
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["path"] == "/v1/messages" and entry["headers"]["x-api-key"] == "k"
    assert entry["body"]["tools"] == ANTHROPIC_TOOLS and entry["answered"] == "turn 0"


def test_turns_from_json() -> None:
    turns = [
        turn_from_json({"calls": [{"write_file": {"path": "/a", "content": "b"}}, {"shell": "ls"}]}),
        turn_from_json({"answer": "done"}),
        turn_from_json({"fail": "rate_limit", "times": None, "retry_after": 3}),
    ]
    assert turns == [
        [WriteFile("/a", "b"), Shell("ls")],
        Answer("done"),
        Fail("rate_limit", times=None, retry_after=3),
    ]
