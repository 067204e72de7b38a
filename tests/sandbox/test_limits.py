"""DESIGN §3.5 #9: a sandbox's processes, memory and CPU are bounded, and a sandbox that hits
a bound harms nothing outside it. Layout finding and settings are pure; the groups are
real (this host's cgroup hierarchies) and the flood and the hog run in real sandboxes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from grantbox.sandbox import limits
from tests.support.sandbox_run import SandboxRunner

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = "9:name=systemd:/\n8:pids:/\n4:memory:/outer/job7\n1:cpu:/\n0::/\n"
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_CGROUP = "0::/user.slice/user-1000.slice/session-2.scope\n"


def test_hybrid_layout_names_our_group_per_v1_controller() -> None:
    layout = limits.find_layout(HYBRID_MOUNTINFO, HYBRID_CGROUP, "hugetlb")
    assert layout.v1 == {
        "cpu": "/sys/fs/cgroup/cpu",
        "memory": "/sys/fs/cgroup/memory/outer/job7",
        "pids": "/sys/fs/cgroup/pids",
    }
    assert layout.v2 == "/sys/fs/cgroup/unified"
    assert layout.v2_controllers == {"hugetlb"}


def test_pure_v2_layout() -> None:
    layout = limits.find_layout(V2_MOUNTINFO, V2_CGROUP, "cpu memory pids io")
    assert layout.v1 == {}
    assert layout.v2 == "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope"
    assert {"cpu", "memory", "pids"} <= layout.v2_controllers


def test_a_cgroup_namespace_root_is_not_repeated() -> None:
    mountinfo = "35 31 0:32 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    layout = limits.find_layout(mountinfo, "4:memory:/outer/job7\n")
    assert layout.v1 == {"memory": "/sys/fs/cgroup/memory/job7"}


def test_defaults_and_overrides() -> None:
    assert limits.resolve() == limits.Limits(512, 1024 * 1024 * 1024, 1.0)
    chosen = limits.resolve(processes=64, memory_mib=128, cpus=0.25)
    assert chosen == limits.Limits(64, 128 * 1024 * 1024, 0.25)
    v1 = limits.v1_settings(chosen)
    assert v1["pids"] == [("pids.max", "64")]
    assert ("memory.limit_in_bytes", str(128 * 1024 * 1024)) in v1["memory"]
    assert v1["cpu"] == [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "25000")]
    assert ("cpu.max", "25000 100000") in limits.v2_settings(chosen)
    tiny = limits.v2_settings(limits.resolve(cpus=0.001))
    assert ("cpu.max", "1000 100000") in tiny


root_only = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


@pytest.fixture
def group() -> Iterator[limits.SandboxCgroup]:
    chosen = limits.resolve(processes=48, memory_mib=64, cpus=0.5)
    made = limits.SandboxCgroup.create(f"test-{uuid.uuid4().hex[:12]}", chosen)
    try:
        yield made
    finally:
        assert made.remove()
        for directory in made.directories:
            assert not os.path.exists(directory)


FLOOD = """
import os, time
made = refused = 0
for _ in range(400):
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        made += 1
    except OSError as exc:
        refused = exc.errno
        break
print(made, refused)
"""


class TestContained:
    pytestmark = root_only

    async def test_fork_flood_stops_at_the_bound(
        self, runner: SandboxRunner, group: limits.SandboxCgroup
    ) -> None:
        result = await runner.run(["python3", "-c", FLOOD], cgroup_procs=group.procs_files)
        assert result.code == 0, result
        made, refused = (int(x) for x in result.out.split())
        assert refused == 11, result  # EAGAIN from pids.max
        assert 10 < made < 48
        # The sandbox is gone with its agent: nothing of the flood is left in the group.
        assert group.pids() == set()

    async def test_memory_hog_is_killed_inside_the_group(
        self, runner: SandboxRunner, group: limits.SandboxCgroup
    ) -> None:
        hog = (
            "b = []\nfor _ in range(64):\n    b.append(bytearray(8 * 1024 * 1024))\nprint('alive')"
        )
        result = await runner.sh(
            f'python3 -c "{hog}"; echo hog-exit=$?', cgroup_procs=group.procs_files
        )
        assert "hog-exit=137" in result.out, result  # SIGKILL by the group's OOM killer
        assert "alive" not in result.out
        after = await runner.sh("echo still-here", cgroup_procs=group.procs_files)
        assert after.out == "still-here\n"

    def test_cpu_quota_is_written(self, group: limits.SandboxCgroup) -> None:
        written = [
            Path(d, name).read_text().strip()
            for d in group.directories
            for name in ("cpu.cfs_quota_us", "cpu.max")
            if Path(d, name).exists()
        ]
        assert written in (["50000"], ["50000 100000"])

    def test_a_group_left_by_a_dead_supervisor_is_swept(self) -> None:
        layout = limits.current_layout()
        parent = layout.v1.get("pids") or layout.v2
        assert parent is not None
        stale = Path(parent, f"{limits.PREFIX}gone-{2**22 + 1}")
        stale.mkdir()
        live = Path(parent, f"{limits.PREFIX}live-{os.getpid()}")
        live.mkdir()
        try:
            removed = limits.sweep([parent])
            assert str(stale) in removed
            assert not stale.exists() and live.exists()
        finally:
            for path in (stale, live):
                if path.exists():
                    path.rmdir()

    async def test_rlimits_bound_processes_where_no_group_does(self, runner: SandboxRunner) -> None:
        uid = 1_999_999_001  # a uid no other process runs as, so the count is ours alone
        result = await runner.run(["python3", "-c", FLOOD], uid=uid, max_processes=16)
        made, refused = (int(x) for x in result.out.split())
        assert refused == 11, result
        assert made < 16

    async def test_rlimits_bound_memory_where_no_group_does(self, runner: SandboxRunner) -> None:
        hog = (
            "b = []\nfor _ in range(64):\n    b.append(bytearray(8 * 1024 * 1024))\nprint('alive')"
        )
        result = await runner.run(["python3", "-c", hog], max_memory_bytes=96 * 1024 * 1024)
        assert result.code == 1, result
        assert "MemoryError" in result.err and "alive" not in result.out
        small = await runner.run(["python3", "-c", "print(len(bytearray(8 << 20)))"],
                                 max_memory_bytes=96 * 1024 * 1024)  # fmt: skip
        assert small.out == f"{8 << 20}\n", small
