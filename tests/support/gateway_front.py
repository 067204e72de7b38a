"""GatewayFront: a loopback HTTP relay between supervisors and a real gateway, for tests
that need the gateway to be away or to refuse one kind of call while everything else works.

It forwards every request (method, path, query, body, ``Authorization``) to the gateway and
relays the answer, except that a test may:

* ``refuse(method, path_suffix, status)``: answer ``status`` itself (a JSON error body) to
  requests whose path ends with ``path_suffix``, without forwarding them;
* ``go_away()``: close its listening socket (new connections are refused) and drop the
  connections of requests already in flight without answering, as a dead gateway would.

Each connection carries one request (HTTP/1.0 close), so nothing outlives ``go_away``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class GatewayFront:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._refusals: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.away = False
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status answered)
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                front._handle(self, "GET")

            def do_POST(self) -> None:
                front._handle(self, "POST")

            def do_DELETE(self) -> None:
                front._handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._http = httpx.Client(timeout=120.0, trust_env=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        self._thread.start()

    def refuse(self, method: str, path_suffix: str, status: int) -> None:
        with self._lock:
            self._refusals[(method, path_suffix)] = status

    def allow(self, method: str, path_suffix: str) -> None:
        with self._lock:
            self._refusals.pop((method, path_suffix), None)

    def go_away(self) -> None:
        self.away = True
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def close(self) -> None:
        self.go_away()
        self._http.close()

    def answered(self, method: str, path_suffix: str) -> list[int]:
        with self._lock:
            return [s for m, p, s in self.seen if m == method and p.endswith(path_suffix)]

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path.split("?", 1)[0]
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            refusal = next(
                (s for (m, p), s in self._refusals.items() if m == method and path.endswith(p)),
                None,
            )
        if self.away:
            return  # the connection closes unanswered
        if refusal is not None:
            data = json.dumps({"error": "refused_by_test", "message": "refused"}).encode()
            return self._answer(handler, method, path, refusal, data, "application/json")
        headers = {
            name: value
            for name, value in handler.headers.items()
            if name.lower() in ("authorization", "content-type")
        }
        try:
            answer = self._http.request(
                method, self.upstream + handler.path, content=body, headers=headers
            )
        except httpx.HTTPError:
            return  # the gateway itself is away: so are we
        if self.away:
            return
        kind = answer.headers.get("content-type", "application/json")
        self._answer(handler, method, path, answer.status_code, answer.content, kind)

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        path: str,
        status: int,
        data: bytes,
        kind: str,
    ) -> None:
        with self._lock:
            self.seen.append((method, path, status))
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", kind)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the supervisor gave up waiting (or was torn down)


@contextmanager
def running_front(upstream: str) -> Iterator[GatewayFront]:
    front = GatewayFront(upstream)
    front.start()
    try:
        yield front
    finally:
        front.close()
