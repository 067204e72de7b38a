"""kill -9 of a gateway process in the middle of a write loop loses no acknowledged write."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.support.gateway_server import grant_profile


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, GRANTBOX_CONFIG_DIR=str(tmp_path / "config"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from grantbox.cli import main; main()",
            "gateway",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("gateway subprocess did not become ready")


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    port = _free_port()
    process = _start(tmp_path, port)
    token_file = tmp_path / "config" / "operator-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    recorded = json.loads((tmp_path / "config" / "gateway.json").read_text())
    assert recorded["url"] == f"http://127.0.0.1:{port}"
    token = token_file.read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    acknowledged: list[str] = []
    stop = threading.Event()

    def write_loop(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            for index in range(400):
                if stop.is_set():
                    return
                profile_id = f"p-{worker}-{index}"
                try:
                    response = client.post(
                        "/api/v1/profiles", json={"documents": [grant_profile(profile_id)]}
                    )
                except httpx.HTTPError:
                    return
                if response.status_code == 201:
                    acknowledged.append(profile_id)

    writers = [threading.Thread(target=write_loop, args=(n,)) for n in range(3)]
    for writer in writers:
        writer.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    stop.set()
    for writer in writers:
        writer.join(10)
    assert len(acknowledged) >= 40, "the write loop made too little progress to test anything"

    database = tmp_path / "state" / "gateway.db"
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {row[0] for row in connection.execute("SELECT id FROM profiles")}
    assert set(acknowledged) <= stored

    restarted = _start(tmp_path, port)
    try:
        listed = httpx.get(f"http://127.0.0.1:{port}/api/v1/profiles", headers=headers).json()
        assert set(acknowledged) <= {p["id"] for p in listed}
    finally:
        restarted.terminate()
        restarted.wait(10)
