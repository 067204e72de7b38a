from __future__ import annotations

import pytest

from grantbox.identity_agent import PeerCredentials, parse_workload_option
from grantbox.identity_agent.registry import (
    caller_allowed,
    check_workload_name,
    make_registration,
    normalise_trust_domain,
    workload_spiffe_id,
)

ROOT = PeerCredentials(pid=1, uid=0, gid=0)
NOBODY = PeerCredentials(pid=2, uid=65534, gid=65534)


@pytest.mark.parametrize("name", ["s1", "sandbox-01", "a.b_c", "X" * 63])
def test_good_names(name: str) -> None:
    assert check_workload_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "-a", ".hidden", "X" * 64, "a b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid workload name"):
        check_workload_name(name)


def test_trust_domain_normalised_and_checked() -> None:
    assert normalise_trust_domain("Example.ORG") == "example.org"
    for bad in ["", "spiffe://example.org", "example.org/path", "bad domain"]:
        with pytest.raises(ValueError, match="invalid trust domain"):
            normalise_trust_domain(bad)


def test_spiffe_ids() -> None:
    assert workload_spiffe_id("example.org", "grantbox/s1") == "spiffe://example.org/grantbox/s1"
    assert workload_spiffe_id("example.org", "/grantbox/s1") == "spiffe://example.org/grantbox/s1"
    for bad in ["", "/", "a//b", "a/../b", "bad path", "a:1"]:
        with pytest.raises(ValueError, match="SPIFFE path"):
            workload_spiffe_id("example.org", bad)


def test_uid_allow_list_fails_closed() -> None:
    open_reg = make_registration("w", "example.org", "w", None)
    only_nobody = make_registration("w", "example.org", "w", [65534])
    assert caller_allowed(open_reg, ROOT) and caller_allowed(open_reg, NOBODY)
    assert caller_allowed(only_nobody, NOBODY)
    assert not caller_allowed(only_nobody, ROOT)
    assert not caller_allowed(make_registration("w", "example.org", "w", []), ROOT)
    assert not caller_allowed(None, ROOT)
    assert not caller_allowed(open_reg, None)
    with pytest.raises(ValueError, match="uids"):
        make_registration("w", "example.org", "w", [-1])


def test_workload_option() -> None:
    assert parse_workload_option("s1=grantbox/s1") == ("s1", "grantbox/s1", None)
    assert parse_workload_option("s1=/a/b:0,1000") == ("s1", "/a/b", frozenset({0, 1000}))
    for bad in ["s1", "=x", "s1=", "s1=a:x", "../x=a"]:
        with pytest.raises(ValueError, match=r"NAME=|uid|workload name"):
            parse_workload_option(bad)
