"""git's smart HTTP protocol on 127.0.0.1, served by the real git-http-backend, with the faults of a
proxy or a forge in trouble: a test sets the HTTP status the next requests get instead, or has the
connection dropped, so that git itself prints what it prints against such a server.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from pathlib import Path

DROP = 0  # close the connection without an answer


class GitHttpServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        # HTTP method -> the status to answer with instead of git's (DROP: none at all); absent: serve.
        self.faults: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                self._answer(self._body())

            def _answer(self, body: bytes) -> None:
                fault = server.faults.get(self.command)
                if fault == DROP:
                    self.close_connection = True
                    self.connection.close()
                elif fault is not None:
                    self.send_response(fault)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._backend(body)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding") != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length", 0)))
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()

            def _backend(self, body: bytes) -> None:
                path, _, query = self.path.partition("?")
                env = {
                    "PATH": os.environ["PATH"],
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": "ralph-test",  # git-http-backend lets only a known user push
                    "REMOTE_ADDR": "127.0.0.1",
                }
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
                head, _, data = out.partition(b"\r\n\r\n")
                status, headers = 200, []
                for line in head.decode().split("\r\n"):
                    key, _, value = line.partition(": ")
                    if key.lower() == "status":
                        status = int(value.split()[0])
                    elif key:
                        headers.append((key, value))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, repository: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{repository}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
