"""Stored credentials and several grants in the request flow, decided with plain data.

Each row feeds a flow plain results and reads its commands and its one outcome: where a
placeholder becomes its value, where it is refused before anything is dialled, and how
several credentials share one request (each in its own header, all or nothing)."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grantbox.grants import GrantFailure, TokenEndpointRejected
from grantbox.profiles import EffectiveConfig, Profile
from grantbox.proxy import (
    Arrival,
    BodyRead,
    Dial,
    Dialed,
    ErrorCode,
    Forward,
    Granted,
    Grants,
    ObtainTokens,
    ReadBody,
    Refuse,
    Resolve,
    Resolved,
    compile_policy,
    parse_head,
    request_flow,
    run_flow,
)
from grantbox.proxy.events import http_activity
from grantbox.proxy.flow import Command, Outcome, Result
from grantbox.proxy.targets import Tunnel
from tests.support.proxy_harness import endpoint, grant_profile, make_config
from tests.support.stored_credentials import stored_profile, with_values

VALUE = "ghp_s3cr3t&value"
LOOPBACK = ["127.0.0.1/32"]


@dataclass
class Script:
    body: bytes = b""
    body_complete: bool = True
    tokens: dict[str, str] = field(default_factory=dict)  # credential -> token
    fail: set[str] = field(default_factory=set)  # credentials whose grant fails
    asked: list[Command] = field(default_factory=list)

    def __call__(self, command: Command) -> Result:
        self.asked.append(command)
        if isinstance(command, Resolve):
            local = command.host.endswith(".localhost")
            return Resolved((ipaddress.ip_address("127.0.0.1" if local else "93.184.216.34"),))
        if isinstance(command, ReadBody):
            return BodyRead(self.body, self.body_complete)
        if isinstance(command, ObtainTokens):
            return Grants(tuple(self._grant(binding.credential) for binding in command.bindings))
        assert isinstance(command, Dial)
        return Dialed(command.addresses[0])

    def _grant(self, credential: str) -> Granted:
        if credential in self.fail:
            return Granted(error=TokenEndpointRejected("issuer said no"))
        return Granted(self.tokens.get(credential, f"tok-{credential}"))

    def dialled(self) -> bool:
        return any(isinstance(c, Dial) for c in self.asked)


GH = stored_profile(
    "gh",
    [
        endpoint("api.example.com", 443, path="/v1/**"),
        endpoint("api.localhost", 80, allowed_ips=LOOPBACK),
        endpoint("upload.example.com", 443, credential_body_rewrite=True),
    ],
    env_var="GITHUB_TOKEN",
)
BASE, PLACEHOLDERS = with_values(
    make_config(
        providers=[("gh", GH)],
        policy=[
            endpoint("api.example.com", 443),
            endpoint("api.example.com", 8443),
            endpoint("other.example.com", 443),
            endpoint("plain.example.com", 80),
        ],
    ),
    {"gh:key": VALUE},
)
P = PLACEHOLDERS["gh:key"]
HTTPS = Tunnel("api.example.com", 443, "https")
BASIC = base64.b64encode(f"u:{P}".encode()).decode()


def run(
    config: EffectiveConfig, head: bytes, script: Script, tunnel: Tunnel | None = HTTPS
) -> Outcome:
    policy = compile_policy(config)
    _commands, outcome = run_flow(
        request_flow(policy, parse_head(head), Arrival(tunnel, "10.0.0.2:5000")), script
    )
    return outcome


def request(target: str, host: str = "api.example.com", extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def shown(outcome: Outcome) -> str:
    """Everything an outcome shows anyone but the upstream: repr, answer, event."""
    if isinstance(outcome, Refuse):
        event = http_activity(outcome.facts, allowed=False, detail=outcome.answer.detail)
        return f"{outcome!r} {outcome.answer.to_bytes('x')!r} {event}"
    event = http_activity(outcome.facts, allowed=True, credentials=outcome.credentials)
    return f"{outcome!r} {event}"


def test_the_bound_endpoint_gets_the_value_in_target_and_headers() -> None:
    script = Script()
    outcome = run(
        BASE,
        request(f"/v1/user?token={P}", extra=f"Authorization: token {P}\r\nX-Key: {P}\r\n"),
        script,
    )
    assert isinstance(outcome, Forward), outcome
    assert outcome.target == "/v1/user?token=ghp_s3cr3t%26value"
    assert (b"Authorization", f"token {VALUE}".encode()) in outcome.headers
    assert (b"X-Key", VALUE.encode()) in outcome.headers
    assert outcome.credentials == ("gh:key",)
    assert VALUE not in shown(outcome) and "s3cr3t" not in shown(outcome)
    assert P in str(outcome.facts.path) or P in str(outcome.facts.fields)  # the agent's own


def test_a_basic_credential_is_decoded_rewritten_and_encoded() -> None:
    basic = base64.b64encode(f"x-access-token:{P}".encode()).decode()
    outcome = run(BASE, request("/v1/repo", extra=f"Authorization: Basic {basic}\r\n"), Script())
    assert isinstance(outcome, Forward)
    sent = dict(outcome.headers)[b"Authorization"]
    assert base64.b64decode(sent.split(b" ")[1]) == f"x-access-token:{VALUE}".encode()


@pytest.mark.parametrize(
    ("head", "tunnel", "where"),
    [
        # another host, port or path than the credential's endpoints
        (request(f"/x?t={P}", "other.example.com"), Tunnel("other.example.com", 443, "https"),
         "target"),
        (request(f"/v1/x?t={P}", "api.example.com:8443"), Tunnel("api.example.com", 8443, "https"),
         "target"),
        (request(f"/v2/x?t={P}"), HTTPS, "target"),
        # a query string to an unbound host, through the forward proxy
        (request(f"http://plain.example.com/q?token={P}", "plain.example.com"), None, "target"),
        # a header and a Basic credential to an unbound path
        (request("/v2/x", extra=f"Authorization: Bearer {P}\r\n"), HTTPS, "Authorization header"),
        (request("/v2/x", extra=f"Authorization: Basic {BASIC}\r\n"), HTTPS, "a Basic credential"),
    ],
)  # fmt: skip
def test_a_placeholder_anywhere_else_is_refused_before_dialling(
    head: bytes, tunnel: Tunnel | None, where: str
) -> None:
    script = Script()
    outcome = run(BASE, head, script, tunnel)
    assert isinstance(outcome, Refuse), outcome
    assert outcome.answer.code is ErrorCode.CREDENTIAL_ENDPOINT_MISMATCH
    assert outcome.answer.status == 403
    assert where in outcome.answer.detail and "gh:key" in outcome.answer.detail
    assert not script.dialled()
    assert VALUE not in shown(outcome)


def test_a_body_that_did_not_opt_in_is_read_first_and_refused() -> None:
    script = Script(body=f'{{"token": "{P}"}}'.encode())
    head = (
        "POST /v1/gists HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(script.body)}\r\n\r\n"
    ).encode()
    outcome = run(BASE, head, script)
    assert isinstance(outcome, Refuse)
    assert outcome.answer.code is ErrorCode.CREDENTIAL_ENDPOINT_MISMATCH
    assert "body" in outcome.answer.detail
    assert [type(c).__name__ for c in script.asked] == ["Resolve", "ReadBody"]


def test_a_body_to_an_endpoint_that_opted_in_is_rewritten_and_reframed() -> None:
    script = Script(body=f'{{"token":"{P}"}}'.encode())
    head = (
        b"POST /up HTTP/1.1\r\nHost: upload.example.com\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    outcome = run(BASE, head, script, Tunnel("upload.example.com", 443, "https"))
    assert isinstance(outcome, Forward), outcome
    assert outcome.body == b'{"token":"ghp_s3cr3t&value"}'
    headers = {n.lower(): v for n, v in outcome.headers}
    assert headers[b"content-length"] == str(len(outcome.body)).encode()
    assert b"transfer-encoding" not in headers
    # Too large to search: refused rather than sent with the placeholder unread.
    script = Script(body=b"x" * 100, body_complete=False)
    outcome = run(BASE, head, script, Tunnel("upload.example.com", 443, "https"))
    assert isinstance(outcome, Refuse) and outcome.answer.status == 413


def test_a_sandbox_without_stored_values_never_reads_bodies() -> None:
    config = make_config(policy=[endpoint("api.example.com", 443)])
    script = Script(body=b"x")
    head = b"POST /v1 HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 1\r\n\r\n"
    assert isinstance(run(config, head, script), Forward)
    assert not any(isinstance(c, ReadBody) for c in script.asked)


def test_cleartext_and_echoing_methods_never_carry_a_value() -> None:
    outcome = run(BASE, request(f"/v1/x?t={P}").replace(b"GET", b"TRACE"), Script())
    assert isinstance(outcome, Refuse) and outcome.answer.code is ErrorCode.POLICY_DENIED
    plain, _ = with_values(
        make_config(providers=[("gh", stored_profile("gh", [endpoint("plain.example.com", 80)]))]),
        {"gh:key": VALUE},
    )
    placeholder = plain.secrets.placeholders["gh:key"]
    head = request(f"http://plain.example.com/?t={placeholder}", host="plain.example.com")
    outcome = run(plain, head, Script(), None)
    assert isinstance(outcome, Refuse)
    assert outcome.answer.code is ErrorCode.CLEARTEXT_CREDENTIAL_REFUSED
    # Loopback over cleartext is allowed, as for tokens.
    head = request(f"http://api.localhost/?t={P}", host="api.localhost")
    assert isinstance(run(BASE, head, Script(), None), Forward)


def test_a_detached_or_updated_credential() -> None:
    # Detached: the config no longer binds it, so the agent's placeholder is unknown.
    detached = make_config(policy=[endpoint("api.example.com", 443)]).with_secrets(BASE.secrets)
    outcome = run(detached, request(f"/v1/x?t={P}"), Script())
    assert isinstance(outcome, Refuse)
    assert outcome.answer.code is ErrorCode.CREDENTIAL_ENDPOINT_MISMATCH
    assert "the placeholder of gh:key" in outcome.answer.detail
    # Updated: the same placeholder resolves to the new value.
    updated = BASE.with_secrets(BASE.secrets.__class__({"gh:key": "new"}, {"gh:key": P}))
    outcome = run(updated, request(f"/v1/x?t={P}"), Script())
    assert isinstance(outcome, Forward) and outcome.target == "/v1/x?t=new"


def test_a_stored_value_with_a_line_break_is_refused_at_use() -> None:
    bad = BASE.with_secrets(BASE.secrets.__class__({"gh:key": "a\r\nX-Evil: 1"}, {"gh:key": P}))
    outcome = run(bad, request("/v1/x", extra=f"Authorization: Bearer {P}\r\n"), Script())
    assert isinstance(outcome, Refuse)
    assert outcome.answer.reason is GrantFailure.GRANT_MISCONFIGURED
    assert "X-Evil" not in shown(outcome)


def test_placed_credentials_add_their_header_only_when_the_agent_sends_none() -> None:
    placed, _ = with_values(
        make_config(
            providers=[
                (
                    "gh",
                    stored_profile("gh", [endpoint("api.example.com", 443)], auth_style="bearer"),
                )
            ]
        ),
        {"gh:key": VALUE},
    )
    outcome = run(placed, request("/anything"), Script())
    assert isinstance(outcome, Forward)
    assert (b"Authorization", f"Bearer {VALUE}".encode()) in outcome.headers
    outcome = run(placed, request("/anything", extra="Authorization: Bearer mine\r\n"), Script())
    assert isinstance(outcome, Forward)
    assert [v for n, v in outcome.headers if n.lower() == b"authorization"] == [b"Bearer mine"]


# -- several grants on one request --------------------------------------------------------


def two_grants(*, same_header: bool = False) -> EffectiveConfig:
    api = [endpoint("api.example.com", 443)]
    first = grant_profile("one", api)
    second = Profile.model_validate(
        {
            "id": "two",
            "credentials": [
                {
                    "name": "key",
                    "auth_style": "bearer" if same_header else "header",
                    "header_name": "" if same_header else "X-Api-Key",
                    "token_grant": {
                        "token_endpoint": "https://auth.example.com/token",
                        "audience": "api://two",
                    },
                }
            ],
            "endpoints": api,
        }
    )
    static = stored_profile("static", api, name="k", auth_style="header", header_name="X-Static")
    config, _ = with_values(
        make_config(providers=[("one", first), ("two", second), ("static", static)]),
        {"static:k": "static-value"},
    )
    return config


def test_bindings_of_distinct_credentials_each_inject_their_own_header() -> None:
    script = Script(tokens={"token": "tok-a", "key": "tok-b"})
    head = request("/v1/x", extra="Authorization: Bearer agent\r\nx-api-key: agent\r\n")
    outcome = run(two_grants(), head, script)
    assert isinstance(outcome, Forward), outcome
    headers = [(n.lower(), v) for n, v in outcome.headers]
    assert [v for n, v in headers if n == b"authorization"] == [b"Bearer tok-a"]
    assert [v for n, v in headers if n == b"x-api-key"] == [b"tok-b"]
    assert [v for n, v in headers if n == b"x-static"] == [b"static-value"]
    asked = [c for c in script.asked if isinstance(c, ObtainTokens)]
    assert [[b.credential for b in c.bindings] for c in asked] == [["token", "key"]]
    event = http_activity(
        outcome.facts,
        allowed=True,
        binding_id=outcome.decision.bindings[0].id,
        binding_ids=tuple(b.id for b in outcome.decision.bindings),
        credentials=outcome.credentials,
    )
    assert len(event["unmapped"]["bindings"]) == 2
    assert event["unmapped"]["credentials"] == ["static:k"]
    assert "tok-a" not in str(event) and "static-value" not in str(event)


@pytest.mark.parametrize("failing", ["token", "key"])
def test_any_grant_failing_fails_the_whole_request(failing: str) -> None:
    script = Script(fail={failing})
    outcome = run(two_grants(), request("/v1/x"), script)
    assert isinstance(outcome, Refuse)
    assert outcome.answer.code is ErrorCode.TOKEN_GRANT_FAILED
    assert outcome.answer.reason is GrantFailure.TOKEN_ENDPOINT_REJECTED
    assert outcome.binding is not None and outcome.binding.credential == failing
    assert len(outcome.bindings) == 2
    assert not script.dialled()


def test_two_grants_for_one_header_are_never_both_injected() -> None:
    # Validation refuses this set; if one slips through, one binding per header is chosen.
    script = Script()
    outcome = run(two_grants(same_header=True), request("/v1/x"), script)
    assert isinstance(outcome, Forward)
    assert len([n for n, _ in outcome.headers if n.lower() == b"authorization"]) == 1
    [asked] = [c for c in script.asked if isinstance(c, ObtainTokens)]
    assert len(asked.bindings) == 1


@settings(max_examples=200)
@given(
    st.sampled_from(["api.example.com", "other.example.com"]),
    st.sampled_from(["/v1/a", "/v2/a"]),
    st.sampled_from(["target", "header", "basic", "body"]),
)
def test_no_refused_outcome_ever_shows_the_value(host: str, path: str, where: str) -> None:
    target, extra, body = path, "", b""
    if where == "target":
        target = f"{path}?t={P}"
    elif where == "header":
        extra = f"X-T: {P}\r\n"
    elif where == "basic":
        extra = "Authorization: Basic " + base64.b64encode(f"u:{P}".encode()).decode() + "\r\n"
    else:
        body = P.encode()
        extra = f"Content-Length: {len(body)}\r\n"
    head = request(target, host=host, extra=extra)
    if body:
        head = head.replace(b"GET", b"POST")
    outcome = run(BASE, head, Script(body=body), Tunnel(host, 443, "https"))
    assert VALUE not in shown(outcome)
    if isinstance(outcome, Forward):
        assert host == "api.example.com" and path.startswith("/v1") and where != "body"
