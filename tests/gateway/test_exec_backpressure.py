"""Exec output is bounded in the gateway, with back-pressure to the producer (#12).

The review read 384 MiB of exec output slowly and watched the ``up`` process grow by
500 MiB: the relay queued every chunk. Here a real command writes 64 MiB through the real
supervisor exec code and a real gateway over HTTP, while the operator reads slowly. The
relay's own accounting must stay within its bound, the command must be held back (when it
finishes, little is still unread), and every byte must arrive intact.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from grantbox.gateway import GatewayServer
from grantbox.gateway.exec_relay import OUTPUT_BUFFER_BYTES, BoundedPipe, Delivery
from grantbox.supervisor.exec_session import run_exec
from grantbox.supervisor.gateway_client import SupervisorClient
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import GatewayCli

TOTAL = 64 * 1024 * 1024
# What may legitimately be in flight besides the relay: pipe and socket buffers, one chunk
# per stream. An unbounded relay leaves ~all of TOTAL unread when the command ends.
IN_FLIGHT_ALLOWANCE = 16 * 1024 * 1024


async def test_a_full_pipe_makes_the_writer_wait_and_then_says_busy() -> None:
    pipe = BoundedPipe(capacity=10)
    assert await pipe.put({"data": "x" * 6}, 6, wait=1) is Delivery.ACCEPTED
    assert await pipe.put({"data": "y" * 6}, 6, wait=0.05) is Delivery.BUSY
    waiting = asyncio.create_task(pipe.put({"data": "z" * 6}, 6, wait=5))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert await pipe.get(1) == {"data": "x" * 6}
    assert await waiting is Delivery.ACCEPTED
    pipe.put_control({"exit_code": 0})  # control items never wait
    assert [await pipe.get(1), await pipe.get(1)] == [{"data": "z" * 6}, {"exit_code": 0}]
    assert pipe.peak <= 10 and pipe.size == 0


async def test_an_item_larger_than_the_pipe_still_passes_alone() -> None:
    pipe = BoundedPipe(capacity=4)
    assert await pipe.put({"data": "big"}, 100, wait=1) is Delivery.ACCEPTED
    assert await pipe.put({"data": "b"}, 1, wait=0.05) is Delivery.BUSY
    pipe.close()
    assert await pipe.put({"data": "b"}, 1, wait=1) is Delivery.GONE
    assert pipe.peak == 100


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_slowly_read_output_is_held_back_and_arrives_intact(
    server: GatewayServer, gw: GatewayCli, driver: RecordingDriver, tmp_path: Path
) -> None:
    payload = tmp_path / "payload"
    with payload.open("wb") as handle:
        for block in range(TOTAL // (1024 * 1024)):
            handle.write(hashlib.sha512(str(block).encode()).digest() * (1024 * 1024 // 64))
    expected = hashlib.sha256(payload.read_bytes()).hexdigest()
    await asyncio.to_thread(gw.ok, "sandbox", "create", "box")
    spec = driver.created[0]
    received = hashlib.sha256()
    read = 0
    read_when_command_ended: list[int] = []

    async def start(
        stdin: int | None, stdout: int | None, stderr: int | None
    ) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            "cat", str(payload), stdin=stdin, stdout=stdout, stderr=stderr
        )

        async def note_end() -> None:
            await process.wait()
            read_when_command_ended.append(read)

        asyncio.get_running_loop().create_task(note_end())
        return process

    async def supervisor() -> None:
        async with SupervisorClient(server.url, spec.sandbox_id, spec.supervisor_token) as c:
            item = None
            while item is None:
                item = await c.next_exec(5)
            await run_exec(c, item, start)

    async def operator() -> int:
        nonlocal read
        headers = {"Authorization": f"Bearer {server.operator_token}"}
        body = {"command": ["cat", "payload"], "timeout_seconds": 240}
        async with (
            httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client,
            client.stream("POST", "/api/v1/sandboxes/box/exec", json=body) as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                item = json.loads(line)
                if "data" in item:
                    chunk = base64.b64decode(item["data"])
                    received.update(chunk)
                    read += len(chunk)
                    await asyncio.sleep(0.015)  # a slow reader
                elif "exit_code" in item:
                    return int(item["exit_code"])
                elif "error" in item:
                    raise AssertionError(item["error"])
        raise AssertionError("the stream ended without an exit code")

    supervising = asyncio.create_task(supervisor())
    code = await operator()
    await supervising
    assert code == 0
    assert read == TOTAL
    assert received.hexdigest() == expected
    relay = server.gateway.relay
    assert 0 < relay.peak_output_bytes <= OUTPUT_BUFFER_BYTES
    [read_then] = read_when_command_ended
    assert TOTAL - read_then < IN_FLIGHT_ALLOWANCE, "the command was not held back"
