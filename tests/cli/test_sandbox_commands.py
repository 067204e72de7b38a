"""``grantbox sandbox`` through the real command against a real gateway (#16).

The sandbox side is the real supervisor exec code running commands as local processes
(``tests.support.exec_peer``); the fence itself is exercised in ``test_with_up.py``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from grantbox.drivers import DriverState, DriverStatus, SandboxSpec
from grantbox.gateway import GatewayServer
from tests.support.exec_peer import ExecPeer, exec_peer
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import GatewayCli
from tests.support.grantbox_command import Grantbox


def _until(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def box(gb: Grantbox, driver: RecordingDriver) -> SandboxSpec:
    gb.ok("sandbox", "create", "box", "--", "sleep", "infinity")
    return driver.created[-1]


@pytest.fixture
def peer(box: SandboxSpec) -> Iterator[ExecPeer]:
    with exec_peer(box) as running:
        yield running


# -- one way to name a sandbox -----------------------------------------------------------------


def test_a_name_is_positional_or_dash_n_on_every_verb(gb: Grantbox, box: SandboxSpec) -> None:
    for args in (("get", "box"), ("get", "-n", "box"), ("get", "--name", "box")):
        assert json.loads(gb.ok("sandbox", *args, "-o", "json").stdout)["id"] == box.sandbox_id
    for verb in ("config", "logs", "events"):
        gb.ok("sandbox", verb, "-n", "box")
        gb.ok("sandbox", verb, "box")


def test_a_name_given_twice_or_not_at_all_is_a_usage_error(gb: Grantbox, box: SandboxSpec) -> None:
    assert gb.refused("sandbox", "get", "box", "-n", "other", code=2) == (
        "two sandbox names given ('box' and 'other'); give NAME or -n NAME, once"
    )
    assert gb.refused("sandbox", "delete", code=2) == (
        "which sandbox? give its name: NAME or -n NAME"
    )
    assert json.loads(gb.ok("sandbox", "get", "box", "-o", "json").stdout)["phase"] != "deleting"


def test_exec_never_takes_its_options_into_the_command(
    gb: Grantbox, box: SandboxSpec, peer: ExecPeer
) -> None:
    assert gb.ok("sandbox", "exec", "-n", "box", "--", "true").stdout == ""
    assert gb.ok("sandbox", "exec", "box", "--", "echo", "-n", "x").stdout == "x"
    assert [item.command for item in peer.received] == [("true",), ("echo", "-n", "x")]
    assert "after --" in gb.refused("sandbox", "exec", "-n", "box", code=2)
    assert len(peer.received) == 2


def test_create_takes_the_command_after_dashes_only(gb: Grantbox, driver: RecordingDriver) -> None:
    gb.ok("sandbox", "create", "-n", "one", "--", "sh", "-c", "echo -n hi")
    gb.ok("sandbox", "create", "two")
    assert [spec.command for spec in driver.created] == [("sh", "-c", "echo -n hi"), ()]
    help_text = gb.ok("sandbox", "create", "--help").stdout
    assert "Usage: grantbox sandbox create [OPTIONS] [NAME] [-- COMMAND...]" in help_text
    assert "``" not in help_text


# -- exec --------------------------------------------------------------------------------------


def test_exec_forwards_piped_stdin_and_exits_with_the_commands_status(
    gb: Grantbox, box: SandboxSpec, peer: ExecPeer
) -> None:
    assert gb.ok("sandbox", "exec", "-n", "box", "--", "cat", input="hi\n").stdout == "hi\n"
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    digest = gb.ok("sandbox", "exec", "box", "--", "sha256sum", input=data).stdout.split()[0]
    assert digest == hashlib.sha256(data).hexdigest()
    failed = gb.run("sandbox", "exec", "box", "--", "sh", "-c", "echo oops >&2; exit 7")
    assert (failed.returncode, failed.stderr) == (7, "oops\n")
    assert [item.stdin for item in peer.received] == [True, True, False]  # /dev/null: no


def test_in_process_exec_reads_the_runners_stdin_not_the_test_processes(
    server: GatewayServer, box: SandboxSpec, peer: ExecPeer, tmp_path: Path
) -> None:
    gw = GatewayCli(server.url, server.operator_token, tmp_path)
    assert gw.run("sandbox", "exec", "box", "--", "cat", input="from the runner").stdout == (
        "from the runner"
    )
    assert gw.run("sandbox", "exec", "box", "--", "cat").stdout == ""  # empty: EOF at once


def test_exec_in_a_sandbox_that_stopped_fails_at_once_and_says_why(
    gb: Grantbox, box: SandboxSpec, driver: RecordingDriver, peer: ExecPeer
) -> None:
    driver.report(box.sandbox_id, DriverStatus(DriverState.FAILED, "supervisor exited with 3"))
    _until(
        lambda: json.loads(gb.ok("sandbox", "get", "box", "-o", "json").stdout)["phase"] == "error"
    )
    started = time.monotonic()
    error = gb.refused("sandbox", "exec", "box", "--", "true")
    assert error == (
        "sandbox 'box' is not running (error: supervisor exited with 3); start it again with "
        "`grantbox sandbox restart box` (HTTP 409)"
    )
    assert time.monotonic() - started < 25  # not the 30 s pickup wait of a dead sandbox
    assert peer.received == []


def test_restart_starts_the_same_sandbox_again_with_a_fresh_run(
    gb: Grantbox, box: SandboxSpec, driver: RecordingDriver, server: GatewayServer
) -> None:
    driver.report(box.sandbox_id, DriverStatus(DriverState.FAILED, "supervisor exited with 3"))
    _until(
        lambda: json.loads(gb.ok("sandbox", "get", "box", "-o", "json").stdout)["phase"] == "error"
    )
    restarted = json.loads(gb.ok("sandbox", "restart", "box", "-o", "json").stdout)
    assert restarted["phase"] == "provisioning"
    assert driver.deleted == [box.sandbox_id]
    again = driver.created[-1]
    assert (again.sandbox_id, again.command) == (box.sandbox_id, ("sleep", "infinity"))
    assert server.gateway.issuer.verify(again.supervisor_token).sandbox_id == box.sandbox_id
    ExecPeer(again).heartbeat()
    assert json.loads(gb.ok("sandbox", "get", "box", "-o", "json").stdout)["phase"] == "ready"
    assert "not found" in gb.refused("sandbox", "restart", "nope")


def test_create_wait_returns_once_ready_and_fails_with_the_reason(
    gb: Grantbox, driver: RecordingDriver
) -> None:
    import threading

    def beat_when_created() -> None:
        _until(lambda: bool(driver.created))
        ExecPeer(driver.created[0]).heartbeat()

    helper = threading.Thread(target=beat_when_created)
    helper.start()
    ready = gb.ok("sandbox", "create", "box", "--wait", "-o", "json")
    helper.join()
    assert json.loads(ready.stdout)["phase"] == "ready"
    assert "sandbox box: ready after" in ready.stderr
    driver.fail_create = "no capacity"
    error = gb.refused("sandbox", "create", "bad", "--wait")
    assert error.startswith("sandbox bad is in phase error: driver could not start it: no capacity")


# -- lists -------------------------------------------------------------------------------------


def test_an_empty_list_says_so_on_stderr_and_prints_no_rows(gb: Grantbox) -> None:
    empty = gb.ok("sandbox", "list")
    assert (empty.stdout, empty.stderr.startswith("no sandboxes")) == ("", True)
    assert json.loads(gb.ok("sandbox", "list", "-o", "json").stdout) == []
    assert gb.ok("provider", "list").stderr.startswith("no providers")


def test_tables_are_plain_in_a_pipe_and_headers_can_go(gb: Grantbox, box: SandboxSpec) -> None:
    table = gb.ok("sandbox", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "PHASE", "PROVIDERS"]
    assert table[1].split()[:2] == ["box", "provisioning"]
    assert not set("│─┃━┏┓┗┛┌┐└┘") & set("".join(table))
    bare = gb.ok("sandbox", "list", "--no-headers").stdout.splitlines()
    assert [line.split() for line in bare] == [line.split() for line in table[1:]]


def test_times_are_rfc3339(gb: Grantbox, box: SandboxSpec) -> None:
    view = json.loads(gb.ok("sandbox", "get", "box", "-o", "json").stdout)
    for key in ("created_at", "updated_at"):
        assert time.strptime(view[key], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert view["last_heartbeat"] is None
