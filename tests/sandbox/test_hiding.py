import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.sandbox.hiding import (
    SHARED_DIRECTORIES,
    HidingRefused,
    hidden_directories,
    shadow_problem,
    socket_directory,
)


@pytest.mark.parametrize("path", sorted(SHARED_DIRECTORIES))
def test_shared_directories_are_refused_with_a_reason(path: str) -> None:
    problem = shadow_problem(path)
    assert problem is not None and "refusing to hide shared directory" in problem
    assert path in problem


@pytest.mark.parametrize("path", ["/run/", "//tmp", "/usr/./", "/var/lib/..", "/etc//"])
def test_spellings_of_shared_directories_are_refused(path: str) -> None:
    assert shadow_problem(path) is not None


@pytest.mark.parametrize("path", ["relative/dir", "", "/a\x00b"])
def test_unusable_paths_are_refused(path: str) -> None:
    assert shadow_problem(path) is not None


@pytest.mark.parametrize("path", ["/run/spire", "/var/lib/grantbox", "/tmp/x", "/home/u/.s"])
def test_dedicated_directories_can_be_hidden(path: str) -> None:
    assert shadow_problem(path) is None


@pytest.mark.parametrize(
    ("uri", "directory"),
    [
        ("unix:///run/spire/agent.sock", "/run/spire"),
        ("unix:/run/grantbox/id/s1/agent.sock", "/run/grantbox/id/s1"),
        ("/srv/identity/agent.sock", "/srv/identity"),
    ],
)
def test_socket_directory_is_the_parent(uri: str, directory: str) -> None:
    assert socket_directory(uri) == directory


@pytest.mark.parametrize("uri", ["tcp://127.0.0.1:8081", "unix:relative.sock", ""])
def test_unhideable_socket_addresses_are_refused(uri: str) -> None:
    with pytest.raises(HidingRefused, match="cannot be hidden"):
        socket_directory(uri)


def test_socket_directly_in_a_shared_directory_is_refused_when_planned() -> None:
    with pytest.raises(HidingRefused, match="/run"):
        hidden_directories([socket_directory("unix:///run/agent.sock")])


def test_nested_and_duplicate_directories_collapse() -> None:
    planned = hidden_directories(["/srv/a/b", "/srv/a", "/srv/a/", "/srv/ab", "/opt/x"])
    assert planned == ("/opt/x", "/srv/a", "/srv/ab")


_segment = st.text(alphabet="abcxyz.", min_size=1, max_size=4).filter(
    lambda s: s not in {".", ".."}
)
_paths = st.lists(_segment, min_size=2, max_size=4).map(lambda parts: "/srv/" + "/".join(parts))


@given(st.lists(_paths, max_size=6))
def test_plan_covers_every_requested_directory_with_no_redundant_entry(paths: list[str]) -> None:
    planned = hidden_directories(paths)
    import os

    for path in paths:
        normal = os.path.normpath(path)
        assert any(normal == p or normal.startswith(p + "/") for p in planned)
    for a in planned:
        assert not any(a != b and a.startswith(b + "/") for b in planned)
