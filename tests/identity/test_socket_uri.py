from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.identity import parse_socket_uri
from grantbox.identity.socket_uri import socket_from_environment


@pytest.mark.parametrize(
    "value",
    ["unix:/run/spire/agent.sock", "unix:///run/spire/agent.sock", "/run/spire/agent.sock"],
)
def test_accepted_forms_give_the_same_path(value: str) -> None:
    assert parse_socket_uri(value) == "/run/spire/agent.sock"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "tcp://127.0.0.1:8081",
        "unix://host/run/agent.sock",
        "unix:relative/agent.sock",
        "relative/agent.sock",
        "unix:/run/agent.sock?x=1",
        "unix:/run/agent.sock#frag",
        "http:/run/agent.sock",
        "unix:/run/\x00agent.sock",
    ],
)
def test_rejected_forms(value: str) -> None:
    with pytest.raises(ValueError, match="workload API socket"):
        parse_socket_uri(value)


segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=12)


@given(st.lists(segment.filter(lambda s: s not in (".", "..")), min_size=1, max_size=6))
def test_all_three_spellings_agree(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert parse_socket_uri(path) == parse_socket_uri(f"unix:{path}")
    assert parse_socket_uri(path) == parse_socket_uri(f"unix://{path}")
    assert parse_socket_uri(path).startswith("/")


def test_environment_variable() -> None:
    assert socket_from_environment({"SPIFFE_ENDPOINT_SOCKET": "unix:///a/b.sock"}) == "/a/b.sock"
    assert socket_from_environment({"SPIFFE_ENDPOINT_SOCKET": "  "}) is None
    assert socket_from_environment({}) is None
    with pytest.raises(ValueError, match="unix socket"):
        socket_from_environment({"SPIFFE_ENDPOINT_SOCKET": "tcp://127.0.0.1:1"})
