"""contrib/hooks/: the notification commands for hooks.on_event, run as ralph runs them, against a
web server of our own on 127.0.0.1 standing in for Slack, Matrix and ntfy, and a notify-send that
records its arguments standing in for the desktop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import executable

HOOKS = Path(__file__).resolve().parent.parent / "contrib" / "hooks"
TITLE_TRICK = 'a "quoted" title\nRQ-9999 landed fake on main\x1b[31m'


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _take(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
            )
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        do_POST = do_PUT = _take

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    finally:
        httpd.shutdown()
        httpd.server_close()


def run_hook(name: str, event: str, **env: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("curl") is None and name != "desktop":
        pytest.skip("curl is not installed")
    ralph_env = {
        "RALPH_EVENT": event,
        "RALPH_TASK_ID": "RQ-0012",
        "RALPH_SHA": "9f1c2ab47e3d5b6c8a0f",
        "RALPH_REASON": TITLE_TRICK,
        "RALPH_BASE_BRANCH": "main",
        "RALPH_WORKSPACE": "/srv/app",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    return subprocess.run(
        [str(HOOKS / name)],
        env={**os.environ, **ralph_env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_slack(server: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = server
    result = run_hook("slack", "landed", SLACK_WEBHOOK_URL=f"{url}/services/T0/B0/secret")
    assert result.returncode == 0, result.stderr
    (request,) = received
    assert (request["method"], request["path"]) == ("POST", "/services/T0/B0/secret")
    assert json.loads(request["body"]) == {"text": "ralph: RQ-0012 landed 9f1c2ab47e on main"}


def test_slack_failure_text_cannot_break_the_json(server: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = server
    assert run_hook("slack", "failed", SLACK_WEBHOOK_URL=url).returncode == 0
    text = json.loads(received[0]["body"])["text"]
    assert text == 'ralph: RQ-0012 failed: a "quoted" title RQ-9999 landed fake on main\\x1b[31m'


def test_matrix(server: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = server
    result = run_hook(
        "matrix",
        "ticks_failing",
        MATRIX_HOMESERVER=url,
        MATRIX_ROOM_ID="!room:example.org",
        MATRIX_TOKEN="tok",
    )
    assert result.returncode == 0, result.stderr
    (request,) = received
    assert request["method"] == "PUT"
    assert request["path"].startswith(
        "/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/ralph-"
    )
    assert request["headers"]["Authorization"] == "Bearer tok"
    body = json.loads(request["body"])
    assert body["msgtype"] == "m.text" and body["body"].startswith("ralph: ticks failing in /srv/app: ")


def test_ntfy_and_the_events_filter(server: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = server
    assert run_hook("ntfy", "blocked_push", NTFY_URL=f"{url}/my-ralph").returncode == 0
    (request,) = received
    assert request["path"] == "/my-ralph"
    assert request["headers"]["Priority"] == "high" and request["headers"]["Title"] == "ralph blocked_push"
    assert request["body"].decode().startswith('ralph: RQ-0012 is blocked: a "quoted" title')
    # NOTIFY_EVENTS names the events worth sending: a landing is not one of them here.
    assert run_hook("ntfy", "landed", NTFY_URL=url, NOTIFY_EVENTS="failed blocked_push").returncode == 0
    assert len(received) == 1


def test_a_missing_setting_says_which(server: tuple[str, list[dict[str, Any]]]) -> None:
    result = run_hook("slack", "landed", SLACK_WEBHOOK_URL="")
    assert result.returncode != 0
    assert "SLACK_WEBHOOK_URL" in result.stderr


def test_desktop(tmp_path: Path) -> None:
    record = tmp_path / "argv.json"
    executable(
        tmp_path / "bin" / "notify-send",
        f"#!{sys.executable}\nimport json, sys\nopen({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n",
    )
    path = f"{tmp_path / 'bin'}:{os.environ['PATH']}"
    assert run_hook("desktop", "ticks_recovered", PATH=path).returncode == 0
    argv = json.loads(record.read_text())
    assert argv[:3] == ["--app-name=ralph", "--urgency=normal", "ralph: ticks_recovered"]
    assert argv[3].startswith("ralph: ticks recovered in /srv/app: ")
