"""A sandbox whose supervisor serves its egress proxy over worker processes
(``--proxy-workers 2``): real gateway, identity agent, local driver, supervisor, fence,
workers, token endpoint and upstream.

The agent holds two connections to its proxy open at once, so the parent hands them to
different workers (each goes to the worker with the fewest open connections), asks for its
first token on both at the same moment, then alternates requests over them. Which worker
served what is read from ``/proc``: each worker holds the upstream connection of the agent
connection it was given.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.proxy_workers import is_worker, proxy_workers_of
from tests.support.sandbox_stack import ALPHA, Stack, running_stack
from tests.support.up_process import UpProcess

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

WORKERS = 2
ROUNDS = 3  # requests on each held connection
# Runs inside the sandbox (system python3): two keep-alive connections through the proxy,
# the first request on both sent before either answer is read, then one at a time; it
# prints each status, then keeps both connections open (argv: base URL, path prefix).
HOLDING_AGENT = r"""
import os, socket, sys, time, urllib.parse
proxy = urllib.parse.urlsplit(os.environ["http_proxy"])
base, prefix, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
host = urllib.parse.urlsplit(base).netloc

def send(sock, path):
    sock.sendall(f"GET {base}{path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())

def status(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit("the proxy closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return lines[0].split()[1].decode()

held = [socket.create_connection((proxy.hostname, proxy.port)) for _ in range(2)]
for n, sock in enumerate(held):
    send(sock, f"{prefix}/0-{n}")
print("statuses", *[status(sock) for sock in held], flush=True)
for i in range(1, rounds):
    for n, sock in enumerate(held):
        send(sock, f"{prefix}/{i}-{n}")
        print("status", status(sock), flush=True)
print("holding", flush=True)
time.sleep(600)
"""


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, proxy_workers=WORKERS) as running:
        yield running


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """A deadline for a loaded machine, not a speed claim."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.1)


def upstream_connections(pid: int, upstream_port: int) -> int:
    """How many TCP connections to 127.0.0.1:``upstream_port`` process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    remote = f"0100007F:{upstream_port:04X}"
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        # st 01: established
        if parts[2] == remote and parts[3] == "01" and parts[9] in inodes:
            count += 1
    return count


def http_events(shipped: str, prefix: str) -> list[dict[str, Any]]:
    """The sandbox's HTTP Activity events for requests under ``prefix``."""
    found = []
    for line in shipped.splitlines():
        if not line.strip():
            continue
        event = json.loads(line).get("data", {})  # the gateway's record wraps the event
        path = event.get("http_request", {}).get("url", {}).get("path", "")
        if event.get("class_uid") == 4002 and path.startswith(prefix):
            found.append(event)
    return found


def series(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def cli_ok(stack: Stack, *args: str) -> str:
    return str((await asyncio.to_thread(stack.gw.ok, *args)).stdout)


async def test_a_sandbox_proxy_over_two_workers(stack: Stack) -> None:
    await cli_ok(stack, "profile", "import", "-f", stack.gw.write("alpha.yaml", stack.profile()))
    await cli_ok(
        stack, "provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials"
    )
    created = await asyncio.to_thread(
        stack.gw.json, "sandbox", "create", "--name", "pooled", "--provider", "pa",
        "--", "python3", "-c", HOLDING_AGENT, stack.alpha_url, "/pooled", str(ROUNDS),
    )  # fmt: skip
    sandbox_id = str(created["id"])
    supervisor = stack.driver.supervisor_pid(sandbox_id)
    assert supervisor is not None

    # (a) The workers run, as children of the supervisor.
    await until(lambda: len(proxy_workers_of(supervisor)) == WORKERS, 60, "the proxy workers")
    workers = proxy_workers_of(supervisor)

    # (b) Every request went up with the one token the endpoint issued...
    sent = WORKERS * ROUNDS

    def pooled() -> list[Any]:
        return [r for r in stack.upstream.requests if r.target.startswith("/pooled/")]

    async def agent_logs() -> str:
        return await cli_ok(stack, "sandbox", "logs", "pooled")

    try:
        await until(lambda: len(pooled()) == sent, 60, "the agent's requests upstream")
        await until(
            lambda: "holding" in stack.gw.run("sandbox", "logs", "pooled").stdout,
            30,
            "the agent's answers",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await agent_logs()}") from None
    logs = await agent_logs()
    assert "statuses 200 200" in logs and logs.count("status 200") == (ROUNDS - 1) * WORKERS
    # (c) ...asked for once by the parent's engine, though both workers asked at once.
    (token,) = stack.issuer.issued
    assert stack.issuer.request_count == 1
    assert [r.header("authorization") for r in pooled()] == [[f"Bearer {token}"]] * sent
    # ...and the two agent connections were served by different workers: each holds the
    # upstream connection of the one it was given.
    assert stack.upstream.connections == WORKERS
    assert {pid: upstream_connections(pid, stack.upstream.port) for pid in workers} == {
        pid: 1 for pid in workers
    }

    # One event per request reaches the gateway, whichever worker decided it.
    def events() -> list[dict[str, Any]]:
        return http_events(stack.gw.run("sandbox", "events", "pooled", "-o", "json").stdout, "/")

    try:
        await until(lambda: len(events()) >= sent, 30, "the requests' events on the gateway")
    except AssertionError as exc:
        shown = stack.gw.run("sandbox", "events", "pooled", "-o", "json").stdout
        raise AssertionError(f"{exc}:\n{shown}") from None
    await asyncio.sleep(1.0)  # events ship every half second: a duplicate would show by now
    shipped = events()
    assert sorted(e["http_request"]["url"]["path"] for e in shipped) == sorted(
        r.target for r in pooled()
    )
    assert all("with a token for" in e["message"] for e in shipped)

    # (d) The gateway's /metrics shows the workers' request counts summed.
    allowed = 'grantbox_proxy_requests_total{code="",decision="allowed",sandbox="pooled"}'
    async with httpx.AsyncClient() as client:

        async def scrape() -> str:
            return (await client.get(f"{stack.server.url}/metrics")).text

        deadline = time.monotonic() + 60  # heartbeats carry them every 5 s
        text = await scrape()
        while series(text, allowed) != sent:
            assert time.monotonic() < deadline, f"no summed request count:\n{text}"
            await asyncio.sleep(0.5)
            text = await scrape()

        # (e) Detaching the provider reaches both workers: a request allowed before is
        # refused on a connection to each (the agent still holds one on each).
        await cli_ok(stack, "sandbox", "detach", "--name", "pooled", "--provider", "pa")

        def applied() -> bool:
            view = stack.gw.json("sandbox", "get", "pooled")
            return bool(view["applied_revision"] == view["revision"])

        await until(applied, 60, "the supervisor applying the detach")
        probe = (
            "import os, socket, sys, urllib.parse\n"
            "proxy = urllib.parse.urlsplit(os.environ['http_proxy'])\n"
            "held = [socket.create_connection((proxy.hostname, proxy.port)) for _ in range(2)]\n"
            "for n, sock in enumerate(held):\n"
            f"    sock.sendall(b'GET {stack.alpha_url}/after/%d HTTP/1.1\\r\\n"
            f"Host: {ALPHA}\\r\\n\\r\\n' % n)\n"
            "for sock in held:\n"
            "    print(sock.recv(65536).split(b' ')[1].decode())\n"
        )
        result = await asyncio.to_thread(
            stack.gw.run, "sandbox", "exec", "--name", "pooled", "--", "python3", "-c", probe
        )
        assert result.exit_code == 0, (result.stdout, result.stderr)
        assert result.stdout.split() == ["403", "403"]
        assert not [r for r in stack.upstream.requests if r.target.startswith("/after/")]

        def refusals() -> list[dict[str, Any]]:
            shipped = stack.gw.run("sandbox", "events", "pooled", "-o", "json").stdout
            return http_events(shipped, "/after/")

        await until(lambda: len(refusals()) == 2, 30, "the refusals' events")
        assert all("policy_denied" in json.dumps(e) for e in refusals())

        # (f) Deleting the sandbox leaves no worker behind.
        await cli_ok(stack, "sandbox", "delete", "pooled")
        assert not Path(f"/proc/{supervisor}").exists()
        await until(lambda: not any(is_worker(pid) for pid in workers), 10, "workers gone")
        assert 'sandbox="pooled"' not in await scrape()


async def test_grantbox_up_passes_the_worker_count_to_each_supervisor(tmp_path: Path) -> None:
    """``GRANTBOX_PROXY_WORKERS`` (the gateway setting ``up --proxy-workers`` overrides)
    reaches every supervisor ``up``'s local driver starts."""
    up = UpProcess(tmp_path)
    up.env["GRANTBOX_PROXY_WORKERS"] = "3"
    await asyncio.to_thread(up.start)
    try:
        created = await asyncio.to_thread(
            up.gb.ok, "sandbox", "create", "box", "--wait", "-o", "json", "--", "sleep", "infinity"
        )
        sandbox_id = json.loads(created.stdout)["id"]
        supervisors = [
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit()
            and _argv_has(entry, ["supervisor", "run", "--sandbox-id", sandbox_id])
        ]
        assert len(supervisors) == 1
        argv = Path(f"/proc/{supervisors[0]}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--proxy-workers") + 1] == b"3"
        await until(lambda: len(proxy_workers_of(supervisors[0])) == 3, 60, "three workers")
        workers = proxy_workers_of(supervisors[0])
    finally:
        said = await asyncio.to_thread(up.stop)
    assert "nothing left running" in said, said
    assert not any(is_worker(pid) for pid in workers)


def _argv_has(entry: Path, words: list[str]) -> bool:
    try:
        argv = entry.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return all(word in argv for word in words)
