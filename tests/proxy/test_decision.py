"""The one authorization step: default deny, endpoints, L7 rules, audit, bindings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.profiles import EffectiveConfig, TlsMode
from grantbox.proxy import Decision, ErrorCode, authorize, path_problem
from grantbox.proxy.decision import Scheme, method_override_problem
from tests.support.proxy_harness import endpoint, grant_profile, make_config


def _decide(
    config: EffectiveConfig,
    method: str = "GET",
    host: str = "api.example.com",
    port: int = 443,
    path: str | None = "/",
    scheme: Scheme = "https",
) -> Decision:
    return authorize(config, method=method, host=host, port=port, path=path, scheme=scheme)


def test_nothing_configured_denies_everything() -> None:
    decision = _decide(make_config())
    assert not decision.allowed
    assert decision.code is ErrorCode.POLICY_DENIED


def test_host_port_and_path_must_all_match() -> None:
    config = make_config(policy=[endpoint("api.example.com", 443, path="/v1/**")])
    assert _decide(config, path="/v1/items?x=1").allowed
    assert _decide(config, path="/v1").allowed
    assert _decide(config, path="/v2/items").code is ErrorCode.POLICY_DENIED
    assert _decide(config, port=8443, path="/v1/x").code is ErrorCode.POLICY_DENIED
    assert _decide(config, host="other.example.com", path="/v1/x").code is ErrorCode.POLICY_DENIED


def test_connect_is_decided_on_host_and_port_and_prefers_the_most_specific_endpoint() -> None:
    config = make_config(
        policy=[
            endpoint("*.example.com", 443),
            endpoint("raw.example.com", 443, tls="skip"),
        ]
    )
    raw = _decide(config, method="CONNECT", host="raw.example.com", path=None)
    assert raw.allowed and raw.tls is TlsMode.SKIP
    other = _decide(config, method="CONNECT", host="api.example.com", path=None)
    assert other.allowed and other.tls is TlsMode.AUTO
    assert not _decide(config, method="CONNECT", host="a.b.example.com", path=None).allowed


@pytest.mark.parametrize(
    ("access", "method", "allowed"),
    [
        ("read-only", "GET", True),
        ("read-only", "HEAD", True),
        ("read-only", "OPTIONS", True),
        ("read-only", "POST", False),
        ("read-only", "DELETE", False),
        ("read-write", "POST", True),
        ("read-write", "PATCH", True),
        ("read-write", "DELETE", False),
        ("full", "DELETE", True),
        ("full", "PROPFIND", True),
    ],
)
def test_access_presets(access: str, method: str, allowed: bool) -> None:
    config = make_config(policy=[endpoint("api.example.com", 443, protocol="rest", access=access)])
    assert _decide(config, method=method).allowed is allowed


def test_rules_match_method_and_path() -> None:
    config = make_config(
        policy=[
            endpoint(
                "api.example.com",
                443,
                protocol="rest",
                rules=[{"method": "GET", "path": "/items/*"}, {"method": "*", "path": "/jobs/**"}],
            )
        ]
    )
    assert _decide(config, path="/items/1").allowed
    assert not _decide(config, method="POST", path="/items/1").allowed
    assert not _decide(config, path="/items/1/sub").allowed
    assert _decide(config, method="DELETE", path="/jobs/7/log").allowed


def test_audit_lets_a_would_be_denial_through_and_says_so() -> None:
    config = make_config(
        policy=[
            endpoint(
                "api.example.com", 443, protocol="rest", access="read-only", enforcement="audit"
            )
        ]
    )
    decision = _decide(config, method="POST", path="/x")
    assert decision.allowed
    assert decision.audit_denial is not None and "POST" in decision.audit_denial
    assert _decide(config, method="GET").audit_denial is None


def test_enforcing_endpoint_wins_over_audit_when_it_admits() -> None:
    config = make_config(
        policy=[
            endpoint("api.example.com", 443, enforcement="audit", path="/audit/**"),
            endpoint("api.example.com", 443, path="/ok/**"),
        ]
    )
    assert _decide(config, path="/ok/1").audit_denial is None
    assert _decide(config, path="/elsewhere").audit_denial is not None


def test_most_specific_binding_is_selected_and_reported() -> None:
    profile = grant_profile(
        "alpha", [endpoint("api.example.com", 443), endpoint("api.example.com", 443, path="/v1/**")]
    )
    decision = _decide(make_config(providers=[("alpha", profile)]), path="/v1/x")
    assert decision.allowed
    assert decision.binding is not None and decision.binding.path == "/v1/**"


def test_tls_skip_endpoints_never_get_a_binding() -> None:
    profile = grant_profile("alpha", [endpoint("api.example.com", 443)])
    config = make_config(
        policy=[endpoint("api.example.com", 443, tls="skip")], providers=[("alpha", profile)]
    )
    decision = _decide(config)
    # the more specific-or-equal tie prefers inspection, so the grant endpoint decides here
    assert decision.tls is TlsMode.AUTO and decision.binding is not None
    only_skip = make_config(policy=[endpoint("raw.example.com", 443, tls="skip")])
    assert _decide(only_skip, host="raw.example.com").binding is None


def test_cleartext_gets_a_token_only_for_loopback_or_in_cluster_hosts() -> None:
    for host, allowed in [
        ("api.example.com", False),
        ("alpha.localhost", True),
        ("127.0.0.1", True),
        ("alpha.team.svc", True),
        ("alpha.team.svc.cluster.local", True),
    ]:
        profile = grant_profile("alpha", [endpoint(host, 80)])
        decision = _decide(
            make_config(providers=[("alpha", profile)]), host=host, port=80, scheme="http"
        )
        assert decision.allowed is allowed, host
        if not allowed:
            assert decision.code is ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED
    # no binding → cleartext is fine anywhere the policy allows
    plain = make_config(policy=[endpoint("api.example.com", 80)])
    assert _decide(plain, port=80, scheme="http").allowed


@pytest.mark.parametrize(
    "path",
    [
        "/a/%2f/b",
        "/a%2Fb",
        "/a%5cb",
        "/a/../b",
        "/a/./b",
        "/a/%2e%2e/b",
        "/a/.%2E/b",
        "/..",
        "/a\\b",
        "/a/..;/b",
        "/a/..;jsessionid=1/b",
        "/a/.;/b",
        "/a/%2e%2e;x/b",
        "/a/%252e%252e/b",
        "/a%252fb",
        "/a%25252Fb",
    ],
)
def test_encoded_separators_and_dot_segments_are_refused(path: str) -> None:
    config = make_config(policy=[endpoint("api.example.com", 443)])
    decision = _decide(config, path=path)
    assert decision.code is ErrorCode.INVALID_REQUEST
    assert path_problem(path) is not None


@given(
    st.lists(st.sampled_from(["a", "b", "%41", "x.y", "...", "a..b", "a;v=1", "..x;"]), max_size=6)
)
def test_ordinary_paths_pass(segments: list[str]) -> None:
    assert path_problem("/" + "/".join(segments)) is None


_PROFILE = grant_profile(
    "alpha",
    [
        endpoint("api.example.com", 443),
        endpoint("*.example.com", 443, path="/v1/**"),
        endpoint("**.internal.example.com", 8443),
    ],
)
_CONFIG = make_config(
    policy=[
        endpoint("api.example.com", 80, protocol="rest", access="read-only"),
        endpoint("raw.example.com", 443, tls="skip"),
    ],
    providers=[("alpha", _PROFILE)],
)


@given(
    host=st.sampled_from(
        [
            "api.example.com",
            "API.example.com",
            "www.example.com",
            "raw.example.com",
            "a.b.internal.example.com",
            "example.com",
            "evil.com",
            "api.example.com.evil.com",
        ]
    ),
    port=st.sampled_from([80, 443, 8443, 9999]),
    path=st.sampled_from(["/", "/v1", "/v1/x", "/v2/x?q=/v1/", "/v1/../x", "/a%2fb"]),
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    scheme=st.sampled_from(["http", "https"]),
)
def test_decisions_agree_with_the_shared_matchers(
    host: str, port: int, path: str, method: str, scheme: str
) -> None:
    from grantbox.profiles import host_matches, path_matches, request_path

    decision = _decide(_CONFIG, method, host, port, path, "https" if scheme == "https" else "http")
    reachable = [
        e for _, e in _CONFIG.endpoints() if port in e.all_ports and host_matches(e.host, host)
    ]
    if not reachable:
        assert decision.code is ErrorCode.POLICY_DENIED
        return
    if path_problem(request_path(path)) is not None:
        assert decision.code is ErrorCode.INVALID_REQUEST
        return
    admitted = [
        e
        for e in reachable
        if path_matches(e.path, request_path(path))
        and (e.access is None or method in ("GET", "HEAD", "OPTIONS"))
    ]
    if not admitted:
        assert decision.code is ErrorCode.POLICY_DENIED
        return
    assert decision.endpoint in admitted
    expected = (
        None
        if decision.tls is TlsMode.SKIP
        else _CONFIG.bindings.select(host, port, request_path(path))
    )
    if expected is not None and scheme == "http":
        assert decision.code is ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED
    else:
        assert decision.allowed and decision.binding == expected


def test_method_override_is_refused_only_where_methods_are_restricted() -> None:
    config = make_config(
        policy=[
            endpoint("ro.example", 443, protocol="rest", access="read-only"),
            endpoint("full.example", 443, protocol="rest", access="full"),
            endpoint("any.example", 443),
            endpoint("star.example", 443, protocol="rest", rules=[{"method": "*", "path": "/**"}]),
            endpoint("get.example", 443, protocol="rest", rules=[{"method": "GET", "path": "/**"}]),
        ]
    )
    endpoints = {e.host: e for _, e in config.endpoints()}
    for host in ("ro.example", "get.example"):
        assert method_override_problem(endpoints[host], ["X-HTTP-Method-Override"], "/") is not None
        assert method_override_problem(endpoints[host], [], "/x?_method=DELETE") is not None
        assert method_override_problem(endpoints[host], [], "/x?a=1&%5Fmethod=PUT") is not None
        assert method_override_problem(endpoints[host], ["X-Other"], "/x?method=1") is None
    for host in ("full.example", "any.example", "star.example"):
        assert method_override_problem(endpoints[host], ["X-HTTP-Method"], "/?_method=x") is None
