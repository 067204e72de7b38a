"""FakeKubeApiServer: an in-memory stand-in for the few core/v1 endpoints the driver uses.

It is NOT a Kubernetes API server: no scheduling, no kubelet, no admission, no RBAC, no
field selectors, equality-only label selectors. It speaks the real wire format for what it
does serve, so the real ``kubernetes`` client library can be pointed at it:

* create/read/delete Pods and Secrets in a namespace (``POST``/``GET``/``DELETE``), with
  409 on duplicates, 404 on missing objects, and request bodies checked against the
  Kubernetes OpenAPI schema (``kubernetes-validate``, strict) like the API would;
* list Pods with a label selector, and watch them (chunked JSON lines, ``resourceVersion``
  resumption, ``timeoutSeconds``, bookmarks ignored, ``410 Gone`` once history is expired).

Every request is recorded so tests can assert exactly what the client sent. Tests play the
kubelet by calling :meth:`set_pod_status`, and can inject failures with :meth:`fail_next`.
With ``linger_deletes`` set, a deleted pod stays (marked with ``deletionTimestamp``, as while
a kubelet stops it) until the test calls :meth:`finish_deletions` or a delete with
``gracePeriodSeconds=0`` forces it out, as the API does.
It listens on 127.0.0.1 only and serves from a thread.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate

SCHEMA_VERSION = "1.37.0"
_KINDS = {"pods": "Pod", "secrets": "Secret"}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def schema_problem(body: Any) -> str | None:
    """What the Kubernetes OpenAPI schema says is wrong with ``body``, or None."""
    try:
        kubernetes_validate.validate(body, SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"
    except Exception as exc:
        return str(exc)
    return None


def _selector(text: str) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for term in filter(None, text.split(",")):
        key, sep, value = term.partition("=")
        if not sep or value.startswith("=") or key.endswith("!"):
            raise ValueError(f"unsupported label selector term {term!r}")
        wanted[key] = value
    return wanted


def _matches(obj: dict[str, Any], wanted: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


class FakeKubeApiServer:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._events: list[tuple[int, str, dict[str, Any]]] = []  # pod events only
        self._oldest = 1
        self._version = 100
        self._failures: list[tuple[str, str, int]] = []
        self._watch_generation = 0
        self.requests: list[RecordedRequest] = []
        self.stopping = False
        self.end_watches_at_once = False  # a misbehaving server: every watch ends empty
        self.linger_deletes = False  # deleted pods stay, terminating, until finished
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self.stopping = True
            self._lock.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # -- what tests look at and do ---------------------------------------------------------

    def objects(self, resource: str, namespace: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                name: copy.deepcopy(obj)
                for (res, ns, name), obj in self._objects.items()
                if res == resource and ns == namespace
            }

    def requests_for(self, method: str, resource: str) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == method and f"/{resource}" in r.path and "watch" not in r.query
            ]

    def watch_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.query.get("watch") == "true"]

    def fail_next(self, method: str, resource: str, code: int) -> None:
        """The next ``method`` on ``resource`` answers ``code`` instead of doing anything."""
        with self._lock:
            self._failures.append((method, resource, code))

    def set_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Play the kubelet: replace a pod's status and tell the watchers."""
        with self._lock:
            pod = self._objects[("pods", namespace, name)]
            pod["status"] = copy.deepcopy(status)
            self._bump("MODIFIED", pod)

    def delete_pod_behind_our_back(self, namespace: str, name: str) -> None:
        """Someone else (kubectl, an eviction) removes the pod."""
        with self._lock:
            pod = self._objects.pop(("pods", namespace, name))
            self._bump("DELETED", pod)
            self._collect_dependents(pod)

    def _collect_dependents(self, owner: dict[str, Any]) -> None:
        """The garbage collector's part, at once (the real one works in the background):
        objects whose ``ownerReferences`` name the removed owner's uid go with it."""
        uid = owner["metadata"]["uid"]
        for key, obj in list(self._objects.items()):
            owners = obj["metadata"].get("ownerReferences") or []
            if key[1] == owner["metadata"]["namespace"] and any(
                o.get("uid") == uid for o in owners
            ):
                del self._objects[key]
                self._bump("DELETED", obj)

    def finish_deletions(self) -> None:
        """The kubelet has stopped every pod being deleted: they are gone."""
        with self._lock:
            for key, obj in list(self._objects.items()):
                if key[0] == "pods" and obj["metadata"].get("deletionTimestamp"):
                    del self._objects[key]
                    self._bump("DELETED", obj)
                    self._collect_dependents(obj)

    def expire_history(self) -> None:
        """Forget every event so far: watches resuming from any version seen get 410 Gone."""
        with self._lock:
            self._oldest = self._version + 1
            self._events.clear()

    def drop_watches(self) -> None:
        """End every open watch stream, as an API server restart would."""
        with self._lock:
            self._watch_generation += 1
            self._lock.notify_all()

    # -- the API -------------------------------------------------------------------------

    def _bump(self, kind: str, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        if obj.get("kind") == "Pod":
            self._events.append((self._version, kind, copy.deepcopy(obj)))
        self._lock.notify_all()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append(RecordedRequest(method, parts.path, query, body))
        segments = parts.path.strip("/").split("/")
        if len(segments) not in (5, 6) or segments[:3] != ["api", "v1", "namespaces"]:
            return self._send(handler, 404, _status(404, "NotFound", f"no route {parts.path}"))
        namespace, resource = segments[3], segments[4]
        name = segments[5] if len(segments) == 6 else None
        if resource not in _KINDS:
            return self._send(handler, 404, _status(404, "NotFound", f"no resource {resource}"))
        with self._lock:
            for i, (m, res, code) in enumerate(self._failures):
                if m == method and res == resource:
                    del self._failures[i]
                    return self._send(handler, code, _status(code, "Injected", "injected"))
        if method == "POST" and name is None:
            return self._create(handler, namespace, resource, body)
        if method == "GET" and name is not None:
            return self._read(handler, namespace, resource, name)
        if method == "DELETE" and name is not None:
            forced = query.get("gracePeriodSeconds") == "0"
            return self._delete(handler, namespace, resource, name, forced)
        if method == "GET" and resource == "pods" and query.get("watch") == "true":
            return self._watch(handler, namespace, query)
        if method == "GET" and resource == "pods":
            return self._list(handler, namespace, query)
        return self._send(handler, 405, _status(405, "MethodNotAllowed", method))

    def _create(
        self, handler: BaseHTTPRequestHandler, namespace: str, resource: str, body: Any
    ) -> None:
        if not isinstance(body, dict) or body.get("kind") != _KINDS[resource]:
            return self._send(handler, 400, _status(400, "BadRequest", "wrong kind"))
        problem = schema_problem(body)
        if problem is not None:
            return self._send(handler, 422, _status(422, "Invalid", problem))
        metadata = body.get("metadata") or {}
        name = metadata.get("name", "")
        if metadata.get("namespace", namespace) != namespace:
            return self._send(handler, 400, _status(400, "BadRequest", "namespace mismatch"))
        obj = copy.deepcopy(body)
        obj["metadata"].update(
            {"namespace": namespace, "uid": str(uuid.uuid4()), "creationTimestamp": _now()}
        )
        if resource == "pods":
            obj["status"] = {"phase": "Pending"}
        with self._lock:
            key = (resource, namespace, name)
            if key in self._objects:
                conflict = _status(409, "AlreadyExists", f"{resource} {name!r} already exists")
                return self._send(handler, 409, conflict)
            self._objects[key] = obj
            self._bump("ADDED", obj)
            answer = copy.deepcopy(obj)
        self._send(handler, 201, answer)

    def _read(
        self, handler: BaseHTTPRequestHandler, namespace: str, resource: str, name: str
    ) -> None:
        with self._lock:
            obj = copy.deepcopy(self._objects.get((resource, namespace, name)))
        if obj is None:
            return self._send(handler, 404, _status(404, "NotFound", f"{name} not found"))
        self._send(handler, 200, obj)

    def _delete(
        self,
        handler: BaseHTTPRequestHandler,
        namespace: str,
        resource: str,
        name: str,
        forced: bool,
    ) -> None:
        with self._lock:
            obj = self._objects.get((resource, namespace, name))
            if obj is None:
                return self._send(handler, 404, _status(404, "NotFound", f"{name} not found"))
            if resource == "pods" and not obj["metadata"].get("deletionTimestamp"):
                # The API marks the pod first; the fake kubelet stops it at once (unless
                # told to linger).
                obj["metadata"]["deletionTimestamp"] = _now()
                self._bump("MODIFIED", obj)
            if resource != "pods" or forced or not self.linger_deletes:
                del self._objects[(resource, namespace, name)]
                self._bump("DELETED", obj)
                self._collect_dependents(obj)
            answer = copy.deepcopy(obj)
        self._send(handler, 200, answer)

    def _list(self, handler: BaseHTTPRequestHandler, namespace: str, query: dict[str, str]) -> None:
        try:
            wanted = _selector(query.get("labelSelector", ""))
        except ValueError as exc:
            return self._send(handler, 400, _status(400, "BadRequest", str(exc)))
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (res, ns, _), obj in sorted(self._objects.items())
                if res == "pods" and ns == namespace and _matches(obj, wanted)
            ]
            version = str(self._version)
        body = {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": version},
            "items": items,
        }
        self._send(handler, 200, body)

    def _watch(
        self, handler: BaseHTTPRequestHandler, namespace: str, query: dict[str, str]
    ) -> None:
        try:
            wanted = _selector(query.get("labelSelector", ""))
        except ValueError as exc:
            return self._send(handler, 400, _status(400, "BadRequest", str(exc)))
        timeout = 0.0 if self.end_watches_at_once else float(query.get("timeoutSeconds", "30"))
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        since = query.get("resourceVersion", "")
        with self._lock:
            generation = self._watch_generation
            if since in ("", "0"):
                pending = [
                    ("ADDED", copy.deepcopy(obj))
                    for (res, ns, _), obj in sorted(self._objects.items())
                    if res == "pods" and ns == namespace
                ]
                cursor = self._version
            elif int(since) < self._oldest:
                gone = _status(410, "Expired", f"too old resource version: {since}")
                pending = [("ERROR", gone)]
                cursor = -1
            else:
                pending = []
                cursor = int(since)
        try:
            deadline = threading.Event()
            timer = threading.Timer(timeout, deadline.set)
            timer.start()
            while True:
                for kind, obj in pending:
                    if kind == "ERROR" or _matches(obj, wanted):
                        self._chunk(handler, {"type": kind, "object": obj})
                if cursor < 0:
                    break
                with self._lock:
                    while not (
                        self.stopping
                        or deadline.is_set()
                        or generation != self._watch_generation
                        or any(rv > cursor for rv, _, _ in self._events)
                    ):
                        self._lock.wait(0.05)
                    if self.stopping or deadline.is_set() or generation != self._watch_generation:
                        break
                    pending = [
                        (kind, copy.deepcopy(obj))
                        for rv, kind, obj in self._events
                        if rv > cursor and obj["metadata"].get("namespace") == namespace
                    ]
                    cursor = self._events[-1][0]
            timer.cancel()
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        handler.close_connection = True

    @staticmethod
    def _chunk(handler: BaseHTTPRequestHandler, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


@contextmanager
def running_fake_kube_api() -> Iterator[FakeKubeApiServer]:
    server = FakeKubeApiServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
