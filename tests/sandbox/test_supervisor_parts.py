"""Plain-data parts of the supervisor, the local driver and the preflight check."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.drivers import DriverState, SandboxSpec
from grantbox.drivers.local import (
    LocalDriverSettings,
    exit_status,
    last_error_line,
    supervisor_command,
    supervisor_invocation,
)
from grantbox.profiles import SandboxPolicy
from grantbox.sandbox.hiding import HidingRefused
from grantbox.sandbox.preflight import rootless_blockers
from grantbox.sandbox.spec import LaunchSpec
from grantbox.supervisor.launch import Fence, SupervisorOptions, agent_launch_spec
from grantbox.supervisor.outbox import Outbox


@given(st.lists(st.integers(), max_size=50), st.integers(1, 10))
def test_outbox_keeps_the_newest_and_counts_what_it_dropped(items: list[int], cap: int) -> None:
    box: Outbox[int] = Outbox(cap)
    for item in items:
        box.put(item)
    assert len(box) == min(cap, len(items))
    assert box.dropped == max(0, len(items) - cap)
    taken = box.take(cap)
    assert taken == items[-cap:] if items else taken == []


def test_outbox_give_back_keeps_order_and_bound() -> None:
    box: Outbox[int] = Outbox(3)
    for item in (1, 2, 3):
        box.put(item)
    batch = box.take(2)
    box.put(4)
    box.give_back(batch)
    assert box.take(10) == [2, 3, 4]
    assert box.dropped == 1


def test_supervisor_hides_socket_token_and_extra_directories(tmp_path: Path) -> None:
    token = tmp_path / "state" / "token"
    options = SupervisorOptions(
        gateway_url="http://127.0.0.1:1",
        sandbox_id="s1",
        token_file=token,
        identity_socket="unix:///run/gbx/workloads/s1/agent.sock",
        hide=("/srv/grantbox",),
    )
    assert options.hidden() == tuple(
        sorted(["/run/gbx/workloads/s1", str(tmp_path / "state"), "/srv/grantbox"])
    )


@pytest.mark.parametrize(
    ("socket", "hide"),
    [("unix:///run/agent.sock", ()), ("tcp://127.0.0.1:1", ()), ("unix:///srv/a.sock", ("/etc",))],
)
def test_supervisor_refuses_what_it_cannot_hide(socket: str, hide: tuple[str, ...]) -> None:
    options = SupervisorOptions(
        gateway_url="http://127.0.0.1:1",
        sandbox_id="s1",
        token_file=Path("/srv/state/token"),
        identity_socket=socket,
        hide=hide,
    )
    with pytest.raises(HidingRefused):
        options.hidden()


def test_supervisor_argv_carries_no_secret(tmp_path: Path) -> None:
    spec = SandboxSpec(
        sandbox_id="s1",
        name="box",
        command=("sh", "-c", "echo hi"),
        gateway_url="http://127.0.0.1:7443",
        supervisor_token="super-secret-token",
        spiffe_path="/grantbox/sandbox/s1",
    )
    settings = LocalDriverSettings(
        state_root=tmp_path, identity_admin_socket=tmp_path / "admin.sock", hide=("/srv/x",)
    )
    invocation = supervisor_invocation(
        settings, spec, tmp_path / "s1" / "token", Path("/run/g/s1/agent.sock")
    )
    argv = invocation.argv(supervisor_command())
    assert "super-secret-token" not in " ".join(argv)
    assert "super-secret-token" not in " ".join(invocation.environment(path="/usr/bin").values())
    assert "super-secret-token" not in repr(spec)
    assert argv[argv.index("--identity-socket") + 1] == "unix:///run/g/s1/agent.sock"
    assert argv[argv.index("--hide") + 1] == "/srv/x"
    assert argv[-4:] == ["--", "sh", "-c", "echo hi"]


def test_exit_status_names_signal_and_last_error(tmp_path: Path) -> None:
    log = tmp_path / "supervisor.log"
    log.write_text('x INFO a: fine\nx WARNING b: gateway not ready\nx INFO c: {"event": 1}\n')
    assert last_error_line(log) == "x WARNING b: gateway not ready"
    killed = exit_status(-9, log)
    assert killed.state == DriverState.FAILED
    assert killed.message.startswith("supervisor killed by signal 9: x WARNING b")
    assert exit_status(0, log).state == DriverState.EXITED
    assert exit_status(3, tmp_path / "missing.log").message == "supervisor exited with 3"


def test_rootless_blockers_name_each_setting() -> None:
    assert rootless_blockers({}) == []
    blockers = rootless_blockers(
        {
            "/proc/sys/kernel/unprivileged_userns_clone": "0",
            "/proc/sys/user/max_user_namespaces": "0",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1",
        }
    )
    assert len(blockers) == 3
    assert "unprivileged_userns_clone is 0; it must be 1" in blockers[0]
    assert "max_user_namespaces is 0; it must be a positive number" in blockers[1]
    assert "apparmor_restrict_unprivileged_userns is 1" in blockers[2]


@pytest.mark.parametrize("rootless", [False, True])
def test_launch_spec_is_fenced_and_scrubbed(tmp_path: Path, rootless: bool) -> None:
    token = tmp_path / "state" / "token"  # never created: the launch spec is pure
    options = SupervisorOptions(
        gateway_url="http://127.0.0.1:1",
        sandbox_id="s1",
        token_file=token,
        identity_socket="unix:///run/gbx/workloads/s1/agent.sock",
        proxy_port=3130,
        rootless=rootless,
        declared_env={"MODEL": "m"},
    )
    spec = agent_launch_spec(options, ["curl", "http://alpha.localhost/"], ca_pem="PEM")
    assert spec.argv == ("curl", "http://alpha.localhost/")
    assert set(spec.hidden) == {"/run/gbx/workloads/s1", str(tmp_path / "state")}
    assert spec.env["HTTPS_PROXY"] == "http://127.0.0.1:3130"
    assert spec.env["MODEL"] == "m"
    assert not token.exists() and spec.ca_pem == "PEM"
    assert (spec.uid, spec.gid, spec.nested_user_namespace) == (
        (None, None, True) if rootless else (65534, 65534, False)
    )


@pytest.mark.parametrize(
    ("rootless", "fence", "expected"),
    [
        # root: the gateway's uid; no cgroup, so the limits become rlimits
        (False, Fence(agent_uid=1_900_000_004), (1_900_000_004, 512, 1024 * 1024 * 1024)),
        # root with a cgroup: no rlimits
        (
            False,
            Fence(agent_uid=1_900_000_004, cgroup_procs=("/cg/p",)),
            (1_900_000_004, None, None),
        ),
        # rootless with subordinate ids mapped: uid 1 inside the namespace
        (True, Fence(agent_uid=1_900_000_004, namespace_agent=1), (1, 512, 1024 * 1024 * 1024)),
        # rootless without: the namespace's own user
        (True, Fence(agent_uid=1_900_000_004), (None, 512, 1024 * 1024 * 1024)),
    ],
)
def test_launch_spec_carries_the_fence(
    tmp_path: Path, rootless: bool, fence: Fence, expected: tuple[int | None, ...]
) -> None:
    options = SupervisorOptions(
        gateway_url="http://127.0.0.1:1",
        sandbox_id="s1",
        token_file=tmp_path / "token",
        identity_socket="unix:///run/gbx/workloads/s1/agent.sock",
        rootless=rootless,
    )
    policy = SandboxPolicy.model_validate(
        {
            "filesystem": {
                "read_only": ["/srv/m"],
                "read_write": ["/srv/w"],
                "landlock": "hard_requirement",
            }
        }
    )
    spec = agent_launch_spec(options, ["true"], fence=replace(fence, policy=policy))
    assert (spec.uid, spec.max_processes, spec.max_memory_bytes) == expected
    assert spec.gid == spec.uid
    assert (spec.read_only, spec.read_write, spec.landlock) == (
        ("/srv/m",),
        ("/srv/w",),
        "hard_requirement",
    )
    assert spec.cgroup_procs == fence.cgroup_procs
    assert LaunchSpec.from_bytes(spec.to_bytes()) == spec
