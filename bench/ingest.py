"""What storing a sandbox's events costs the gateway, next to the floor of its storage.

A sandbox's supervisor ships one OCSF event for every request its proxy serves, in batches
of up to 1,000; the gateway parses each batch, stores it as one row and trims the sandbox's
events to its retention. On the sandbox path that is the work a standalone proxy
does not do (README, Performance). Two figures, side by side in one run:

* *gateway*: a real gateway (HTTP, FastAPI, SQLite in WAL mode) on loopback, sent batches
  of 1,000 copies of a typical proxy event (about 950 bytes) with a supervisor token; the
  CPU time of the gateway's threads (its event loop and its storage threads) per event;
* *floor*: the same batch read and stored by the gateway's own code called directly, phase
  by phase (reading the batch, packing it into a row, INSERT with the retention trim,
  commit).

The difference is what HTTP, FastAPI, validation and threads add. Bounded: a fixed number
of batches, a few seconds.

    .venv/bin/python bench/ingest.py [--batches 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support

import httpx
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import GatewayCli, gateway_settings, grant_profile, serving

from grantbox.gateway.event_batches import pack
from grantbox.gateway.shipped_events import read_shipped
from grantbox.gateway.storage import SandboxRow, append_batch
from grantbox.heap import settle
from grantbox.proxy import event_json

BATCH = 1000
PHASES = ("read", "pack", "store", "commit")


def typical_event(sandbox_id: str) -> dict[str, object]:
    """An allowed, token-injected request's event, shaped and sized like the proxy's."""
    return {
        "activity_id": 1, "category_uid": 4, "class_uid": 4002, "kind": "http",
        "time": int(time.time() * 1000), "severity_id": 1, "status_id": 1,
        "metadata": {"product": {"name": "grantbox", "vendor_name": "grantbox"}},
        "http_request": {
            "http_method": "GET",
            "url": {"hostname": "api.example", "port": 443, "path": "/v1/items?page=2",
                    "scheme": "https", "url_string": "https://api.example/v1/items?page=2"},
            "user_agent": "python-httpx/0.28.1",
        },
        "http_response": {"code": 200},
        "dst_endpoint": {"hostname": "api.example", "ip": "192.0.2.10", "port": 443},
        "src_endpoint": {"ip": "10.200.0.2", "port": 43210},
        "actor": {"process": {"name": "python3", "pid": 1234}},
        "unmapped": {
            "sandbox_id": sandbox_id, "decision": "allowed", "rule": "provider:api",
            "binding": "api:access_token@api.example:443/v1/**", "injected": True,
            "headers": {"accept": "application/json", "authorization": "[redacted]"},
        },
    }  # fmt: skip


def _thread_cpu(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu(client_thread: int) -> dict[int, float]:
    return {
        int(task): _thread_cpu(int(task))
        for task in os.listdir("/proc/self/task")
        if int(task) != client_thread
    }


def through_the_gateway(batches: int, root: Path) -> tuple[float, int, str]:
    """CPU µs per event of the gateway's threads, the event's size, and the database URL."""
    driver = RecordingDriver()
    with serving(gateway_settings(root), driver) as server:
        cli = GatewayCli(server.url, server.operator_token, root)
        cli.ok("profile", "import", "-f", cli.write("p.yaml", grant_profile("bench")))
        cli.ok("provider", "create", "--name", "bench", "--type", "bench", "--runtime-credentials")
        cli.ok("sandbox", "create", "--name", "box", "--provider", "bench")
        [spec] = driver.created
        line = event_json(typical_event(spec.sandbox_id))
        body = b'{"events":[' + b",".join([line] * BATCH) + b"]}"
        url = f"{server.url}/api/v1/supervisor/sandboxes/{spec.sandbox_id}/events"
        headers = {
            "Authorization": f"Bearer {spec.supervisor_token}",
            "Content-Type": "application/json",
        }
        me = threading.get_native_id()
        with httpx.Client(timeout=60) as client:
            for _ in range(5):  # warm-up: fills the table past its retention
                client.post(url, content=body, headers=headers).raise_for_status()
            settle()  # as the gateway's own process does before serving
            before = _server_cpu(me)
            for _ in range(batches):
                client.post(url, content=body, headers=headers).raise_for_status()
            after = _server_cpu(me)
        used = sum(after[t] - before.get(t, 0.0) for t in after)
        return 1e6 * used / (batches * BATCH), len(line), server.gateway.store.backend


def storage_floor(batches: int, root: Path) -> dict[str, float]:
    """CPU µs per event of each phase when the storage code is called directly."""
    from grantbox.gateway.catalog import Catalog, load_builtins
    from grantbox.gateway.changes import ChangeFeed
    from grantbox.gateway.services import SandboxService
    from grantbox.gateway.storage import Store

    store = Store.open(f"sqlite:///{root / 'floor.db'}")
    service = SandboxService(store, Catalog(load_builtins()), ChangeFeed(), stale_after=30)
    service.create("box", [], None, [])
    sandbox_id = service.get("box").id
    line = event_json(typical_event(sandbox_id))
    body = b'{"events":[' + b",".join([line] * BATCH) + b"]}"
    spent = dict.fromkeys(PHASES, 0.0)
    clock = time.thread_time
    for index in range(batches + 5):
        started = clock()
        events = read_shipped(body, time.time())
        read = clock()
        packed = pack(events)
        packed_at = clock()
        with store.write() as session:
            session.get(SandboxRow, sandbox_id, with_for_update=True)
            append_batch(session, sandbox_id, packed, service.log_retention)
            stored = clock()
        committed = clock()
        if index >= 5:
            for phase, seconds in zip(
                PHASES,
                (read - started, packed_at - read, stored - packed_at, committed - stored),
                strict=True,
            ):
                spent[phase] += seconds
    store.close()
    return {phase: 1e6 * seconds / (batches * BATCH) for phase, seconds in spent.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60, help="measured batches of 1,000")
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error("--batches must be at least 1")
    with tempfile.TemporaryDirectory(prefix="gbx-ingest-") as tmp:
        root = Path(tmp)
        (root / "gateway").mkdir()
        gateway, size, backend = through_the_gateway(args.batches, root / "gateway")
        floor = storage_floor(args.batches, root)
    total = sum(floor.values())
    print(f"events of {size} bytes, {args.batches} batches of {BATCH}, {backend}")
    print(f"  gateway (HTTP to stored)   {gateway:6.1f} µs of CPU per event")
    print(f"  storage floor (direct)     {total:6.1f} µs: " + ", ".join(
        f"{phase} {floor[phase]:.1f}" for phase in PHASES
    ))  # fmt: skip
    print(f"  gateway / floor            {gateway / total:6.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
