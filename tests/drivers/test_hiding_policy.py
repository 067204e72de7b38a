"""One hiding policy for both drivers: what the local supervisor refuses to hide, the
Kubernetes driver refuses as a socket directory, and the other way round."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.drivers.kubernetes import socket_path_problem
from grantbox.sandbox.hiding import SHARED_DIRECTORIES, shadow_problem


@pytest.mark.parametrize("directory", sorted(SHARED_DIRECTORIES - {"/"}))
def test_shared_directories_are_refused_by_both(directory: str) -> None:
    assert shadow_problem(directory) is not None
    problem = socket_path_problem(directory + "/agent.sock")
    assert problem is not None and "shared" in problem


@pytest.mark.parametrize("directory", ["/proc/1", "/sys/fs/x", "/dev/shm", "/dev/mqueue"])
def test_kernel_trees_are_refused_by_both(directory: str) -> None:
    assert shadow_problem(directory) is not None
    assert socket_path_problem(directory + "/agent.sock") is not None


_segment = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)


@given(st.sampled_from(sorted(SHARED_DIRECTORIES)), st.lists(_segment, min_size=1, max_size=3))
def test_the_drivers_agree_on_every_directory(base: str, parts: list[str]) -> None:
    directory = base.rstrip("/") + "/" + "/".join(parts)
    local_ok = shadow_problem(directory) is None
    pod_problem = socket_path_problem(directory + "/agent.sock")
    pod_ok = pod_problem is None or "token directory" in pod_problem
    assert local_ok == pod_ok, directory
