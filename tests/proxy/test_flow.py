"""The request flow decided with plain data: feed it results, read its commands and its one
outcome. Every refusal the proxy can make after parsing a head is a row here."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from grantbox.grants import GrantFailure, TokenEndpointTimeout
from grantbox.profiles import EffectiveConfig
from grantbox.proxy import (
    UNKNOWN_PROGRAM,
    Arrival,
    Dial,
    Dialed,
    ErrorCode,
    Forward,
    Granted,
    Grants,
    IdentifyProgram,
    ObtainTokens,
    Program,
    Refuse,
    Resolve,
    Resolved,
    compile_policy,
    parse_head,
    request_flow,
    run_flow,
)
from grantbox.proxy.flow import Command, Outcome, Result
from grantbox.proxy.targets import Tunnel
from tests.support.proxy_harness import endpoint, grant_profile, make_config

LOOPBACK = ["127.0.0.1/32", "::1/128"]
CURL = (1, 10)
PYTHON = (1, 20)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@dataclass
class Script:
    """Plain results for each command; records what the flow asked for."""

    addresses: tuple[str, ...] = ("93.184.216.34",)
    resolve_error: str = ""
    token: str = "tok"
    grant_error: Exception | None = None
    dial_error: str = ""
    program: Program = UNKNOWN_PROGRAM
    asked: list[Command] = field(default_factory=list)

    def __call__(self, command: Command) -> Result:
        self.asked.append(command)
        if isinstance(command, Resolve):
            if self.resolve_error:
                return Resolved(error=self.resolve_error)
            return Resolved(tuple(ip(a) for a in self.addresses))
        if isinstance(command, ObtainTokens):
            if self.grant_error is not None:
                assert isinstance(self.grant_error, TokenEndpointTimeout)
                return Grants(tuple(Granted(error=self.grant_error) for _ in command.bindings))
            return Grants(tuple(Granted(self.token) for _ in command.bindings))
        if isinstance(command, Dial):
            if self.dial_error:
                return Dialed(error=self.dial_error)
            return Dialed(command.addresses[0])
        assert isinstance(command, IdentifyProgram)
        return self.program

    def kinds(self) -> list[str]:
        return [type(c).__name__ for c in self.asked]


def decide(
    config: EffectiveConfig,
    head: bytes,
    script: Script,
    tunnel: Tunnel | None = None,
    executables: dict[str, tuple[int, int] | None] | None = None,
) -> Outcome:
    policy = compile_policy(config, executables)
    _commands, outcome = run_flow(
        request_flow(policy, parse_head(head), Arrival(tunnel, "10.0.0.2:5000")), script
    )
    return outcome


GRANT = make_config(
    providers=[
        (
            "alpha",
            grant_profile(
                "alpha",
                [
                    endpoint("api.example.com", 443),
                    endpoint("alpha.localhost", 80, allowed_ips=LOOPBACK),
                    endpoint("beta.localhost", 80, allowed_ips=["127.0.0.0/8", "10.0.0.0/8"]),
                ],
            ),
        )
    ],
    policy=[
        endpoint("plain.example.com", 80),
        endpoint("ro.example.com", 443, protocol="rest", access="read-only"),
        endpoint("raw.example.com", 443, tls="skip"),
    ],
)
HTTPS_TUNNEL = Tunnel("api.example.com", 443, "https")


def get(target: str, host: str = "x", extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def refused(outcome: Outcome, code: ErrorCode) -> Refuse:
    assert isinstance(outcome, Refuse), outcome
    assert outcome.answer.code is code, outcome.answer
    return outcome


@dataclass(frozen=True)
class Row:
    name: str
    head: bytes
    tunnel: Tunnel | None
    script: Callable[[], Script]
    code: ErrorCode | None  # None: forwarded
    commands: tuple[str, ...]


ROWS = [
    Row(
        "forward, no binding",
        get("http://plain.example.com/"),
        None,
        Script,
        None,
        ("Resolve", "Dial"),
    ),
    Row(
        "inside TLS, token",
        get("/v1", "api.example.com"),
        HTTPS_TUNNEL,
        Script,
        None,
        ("Resolve", "ObtainTokens", "Dial"),
    ),
    Row(
        "policy denied, nothing asked",
        get("http://evil.example/"),
        None,
        Script,
        ErrorCode.POLICY_DENIED,
        (),
    ),
    Row(
        "bad path, nothing asked",
        get("http://plain.example.com/a/../b"),
        None,
        Script,
        ErrorCode.INVALID_REQUEST,
        (),
    ),
    Row(
        "unresolvable",
        get("http://plain.example.com/"),
        None,
        lambda: Script(resolve_error="no such name"),
        ErrorCode.UPSTREAM_UNREACHABLE,
        ("Resolve",),
    ),
    Row(
        "SSRF after resolution: metadata",
        get("/v1", "api.example.com"),
        HTTPS_TUNNEL,
        lambda: Script(addresses=("169.254.169.254",)),
        ErrorCode.SSRF_DENIED,
        ("Resolve",),
    ),
    Row(
        "SSRF after resolution: unlisted loopback",
        get("http://plain.example.com/"),
        None,
        lambda: Script(addresses=("127.0.0.1",)),
        ErrorCode.SSRF_DENIED,
        ("Resolve",),
    ),
    Row(
        "loopback name, remote address",
        get("http://beta.localhost/", "beta.localhost"),
        None,
        lambda: Script(addresses=("127.0.0.1", "10.1.2.3")),
        ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED,
        ("Resolve",),
    ),
    Row(
        "cleartext token to a public host",
        get("/v1", "api.example.com:443"),
        Tunnel("api.example.com", 443, "http"),
        Script,
        ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED,
        (),
    ),
    Row(
        "grant failed: no dial",
        get("/v1", "api.example.com"),
        HTTPS_TUNNEL,
        lambda: Script(grant_error=TokenEndpointTimeout("slow issuer")),
        ErrorCode.TOKEN_GRANT_FAILED,
        ("Resolve", "ObtainTokens"),
    ),
    Row(
        "malformed token: no dial",
        get("/v1", "api.example.com"),
        HTTPS_TUNNEL,
        lambda: Script(token="tok\r\nX-Evil: 1"),
        ErrorCode.TOKEN_GRANT_FAILED,
        ("Resolve", "ObtainTokens"),
    ),
    Row(
        "dial failed",
        get("http://plain.example.com/"),
        None,
        lambda: Script(dial_error="refused"),
        ErrorCode.UPSTREAM_UNREACHABLE,
        ("Resolve", "Dial"),
    ),
    Row(
        "method override",
        get("/x?.method=DELETE", "ro.example.com"),
        Tunnel("ro.example.com", 443, "https"),
        Script,
        ErrorCode.POLICY_DENIED,
        (),
    ),
    Row(
        "spaced header name",
        get("/v1", "api.example.com", "X-A : b\r\n"),
        HTTPS_TUNNEL,
        Script,
        ErrorCode.INVALID_REQUEST,
        ("Resolve",),
    ),
    Row(
        "Host names another host",
        get("/v1", "evil.example"),
        HTTPS_TUNNEL,
        Script,
        ErrorCode.INVALID_REQUEST,
        (),
    ),
    Row(
        "CONNECT inside a tunnel",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        HTTPS_TUNNEL,
        Script,
        ErrorCode.INVALID_REQUEST,
        (),
    ),
    Row(
        "CONNECT, inspected",
        b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        None,
        Script,
        None,
        ("Resolve",),
    ),
    Row(
        "CONNECT, raw tunnel dialled",
        b"CONNECT raw.example.com:443 HTTP/1.1\r\n\r\n",
        None,
        Script,
        None,
        ("Resolve", "Dial"),
    ),
    Row(
        "CONNECT to metadata",
        b"CONNECT api.example.com:443 HTTP/1.1\r\n\r\n",
        None,
        lambda: Script(addresses=("fd00:ec2::254",)),
        ErrorCode.SSRF_DENIED,
        ("Resolve",),
    ),
    Row(
        "CONNECT denied",
        b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n",
        None,
        Script,
        ErrorCode.POLICY_DENIED,
        (),
    ),
    Row(
        "CONNECT malformed target",
        b"CONNECT evil.example HTTP/1.1\r\n\r\n",
        None,
        Script,
        ErrorCode.INVALID_REQUEST,
        (),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_every_outcome_from_plain_results(row: Row) -> None:
    script = row.script()
    outcome = decide(GRANT, row.head, script, row.tunnel)
    if row.code is None:
        assert isinstance(outcome, Forward), outcome
    else:
        refused(outcome, row.code)
    assert tuple(script.kinds()) == row.commands


def test_a_forward_carries_the_rewritten_head_and_the_dialled_address() -> None:
    head = get("/v1?q=1", "api.example.com", "authorization: Bearer agent\r\nX-Keep: 1\r\n")
    outcome = decide(GRANT, head, Script(token="granted"), HTTPS_TUNNEL)
    assert isinstance(outcome, Forward)
    assert outcome.target == "/v1?q=1" and outcome.address == ip("93.184.216.34")
    assert outcome.headers == [
        (b"Host", b"api.example.com"),
        (b"X-Keep", b"1"),
        (b"Authorization", b"Bearer granted"),
    ]
    assert outcome.injected and outcome.decision.binding is not None
    assert outcome.facts.hidden == ("Authorization",)


def test_grant_failures_carry_the_vocabularys_reason_and_the_binding() -> None:
    outcome = decide(
        GRANT,
        get("/v1", "api.example.com"),
        Script(grant_error=TokenEndpointTimeout("slow")),
        HTTPS_TUNNEL,
    )
    refusal = refused(outcome, ErrorCode.TOKEN_GRANT_FAILED)
    assert refusal.answer.reason is GrantFailure.TOKEN_ENDPOINT_TIMEOUT
    assert refusal.binding is not None and refusal.answer.detail == "slow"
    malformed = decide(GRANT, get("/v1", "api.example.com"), Script(token="a b"), HTTPS_TUNNEL)
    assert refused(malformed, ErrorCode.TOKEN_GRANT_FAILED).answer.reason is (
        GrantFailure.TOKEN_MALFORMED
    )


def test_an_open_connection_is_revalidated_like_a_fresh_answer() -> None:
    """The relay answers Resolve with the address of its open upstream connection; the
    flow validates it like any answer (a policy update may have removed it)."""
    narrowed = make_config(policy=[endpoint("plain.example.com", 80, allowed_ips=["10.0.0.0/8"])])
    outcome = decide(narrowed, get("http://plain.example.com/"), Script())
    refused(outcome, ErrorCode.SSRF_DENIED)


BINARIES = make_config(
    providers=[
        (
            "alpha",
            grant_profile("alpha", [endpoint("api.example.com", 443)]).model_copy(
                update={"binaries": ("/usr/bin/curl",)}
            ),
        )
    ],
    policy=[endpoint("open.example.com", 443)],
)
KNOWN = {"/usr/bin/curl": CURL}


@pytest.mark.parametrize(
    ("program", "allowed"),
    [
        (Program((frozenset({CURL}),)), True),
        (Program((frozenset({PYTHON, CURL}),)), True),  # curl started by python
        (Program((frozenset({PYTHON}),)), False),
        (Program((frozenset({CURL}), frozenset({PYTHON}))), False),  # socket shared
        (UNKNOWN_PROGRAM, False),
    ],
)
def test_binaries_admit_only_the_listed_programs(program: Program, allowed: bool) -> None:
    script = Script(program=program)
    outcome = decide(BINARIES, get("/v1", "api.example.com"), script, HTTPS_TUNNEL, KNOWN)
    if allowed:
        assert isinstance(outcome, Forward) and outcome.injected
    else:
        refused(outcome, ErrorCode.POLICY_DENIED)
    assert script.kinds()[0] == "IdentifyProgram"
    connect = decide(
        BINARIES,
        b"CONNECT api.example.com:443 HTTP/1.1\r\n\r\n",
        Script(program=program),
        None,
        KNOWN,
    )
    assert isinstance(connect, Forward) is allowed


def test_entries_without_binaries_never_ask_for_the_program() -> None:
    script = Script(program=Program((frozenset({PYTHON}),)))
    outcome = decide(
        BINARIES,
        get("/", "open.example.com"),
        script,
        Tunnel("open.example.com", 443, "https"),
        KNOWN,
    )
    assert isinstance(outcome, Forward)
    assert "IdentifyProgram" not in script.kinds()


def test_a_binding_of_a_binaries_profile_is_not_injected_through_another_entry() -> None:
    """A sandbox entry admitting the same host must not hand python the curl-only token."""
    config = make_config(
        providers=[
            (
                "alpha",
                grant_profile("alpha", [endpoint("api.example.com", 443)]).model_copy(
                    update={"binaries": ("/usr/bin/curl",)}
                ),
            )
        ],
        policy=[endpoint("api.example.com", 443)],
    )
    python = Script(program=Program((frozenset({PYTHON}),)))
    outcome = decide(config, get("/v1", "api.example.com"), python, HTTPS_TUNNEL, KNOWN)
    assert (
        "only for the provider's binaries"
        in refused(outcome, ErrorCode.POLICY_DENIED).answer.detail
    )


def test_binaries_that_cannot_be_identified_admit_nothing() -> None:
    script = Script(program=Program((frozenset({CURL}),)))
    outcome = decide(BINARIES, get("/v1", "api.example.com"), script, HTTPS_TUNNEL, {})
    refused(outcome, ErrorCode.POLICY_DENIED)
