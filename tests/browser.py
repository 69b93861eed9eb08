"""A real headless Chromium for tests, driven through chromedriver's WebDriver HTTP API (standard
library only). Network requests are read from Chromium's own performance log (DevTools Network
events). Under CI=true a missing browser fails the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",  # a closed network: no update, safe-browsing or metrics fetches
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
    "--window-size=1280,1600",
]


def find_browser() -> tuple[str, str]:
    """(chromium, chromedriver), or skip (fail under CI) saying what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = " and ".join(n for n, p in (("chromium", chromium), ("chromedriver", driver)) if not p)
    reason = f"{missing} not installed (Debian: apt-get install chromium chromium-driver; .ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must test the status page in a real browser: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Browser:
    def __init__(self, url: str, session: str) -> None:
        self.url = url
        self.session = session

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/session/{self.session}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def run(self, script: str) -> Any:
        """Run `script` (a function body that returns a value) in the page."""
        return self._call("POST", "/execute/sync", {"script": script, "args": []})

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))
        return path

    def requests(self) -> list[str]:
        """The URL of every request the page made since the last call (DevTools Network events)."""
        entries = self._call("POST", "/se/log", {"type": "performance"})
        urls = []
        for entry in entries:
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls


@contextmanager
def chromium() -> Iterator[Browser]:
    binary, driver = find_browser()
    port = _free_port()
    server = subprocess.Popen(
        [driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/status", timeout=5) as response:
                    if json.loads(response.read())["value"].get("ready"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.1)
        capabilities = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": binary, "args": CHROMIUM_ARGS},
                    "goog:loggingPrefs": {"performance": "ALL"},
                }
            }
        }
        request = urllib.request.Request(
            f"{url}/session",
            data=json.dumps(capabilities).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            session = json.loads(response.read())["value"]["sessionId"]
        browser = Browser(url, session)
        try:
            yield browser
        finally:
            with urllib.request.urlopen(
                urllib.request.Request(f"{url}/session/{session}", method="DELETE"), timeout=60
            ):
                pass
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
