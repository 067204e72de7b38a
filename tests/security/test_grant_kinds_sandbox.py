"""The grant kinds through a real sandbox (`grantbox up` parts: gateway, local identity agent,
local driver, supervisor, fence, proxy), each against an independent token endpoint written
for the test (:mod:`tests.support.oauth_peer`) and a recording upstream; the agent is curl
(or sh) inside the fence.

* RFC 8693 token exchange: the endpoint verifies the subject token (the sandbox's JWT-SVID)
  against the identity agent's JWKS and checks the RFC 8693 form; the upstream receives the
  exchanged token where the binding matches and nowhere else; the agent's view never holds
  the SVID or the token; an unexpected ``issued_token_type`` is ``token_malformed``.
* RFC 8705 mutual TLS with the X.509-SVID: the endpoint requires a client certificate that
  chains to the trust domain's X.509 bundle and whose URI SAN is the ``client_id``; its own
  certificate comes from a private CA pinned by ``token_endpoint_ca``; a refused
  certificate is ``token_endpoint_rejected``; the agent never sees the X.509 key. (The same
  through ``grantbox up --upstream-ca`` is in ``test_upstream_ca_sandbox.py``.)
* Manners: a 429 with ``Retry-After: N`` keeps the endpoint unasked for N seconds however
  many requests the agent makes, then the grant recovers.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import trustme
from cryptography import x509

from grantbox.identity import WorkloadIdentityClient
from tests.support.agent_view import parse, search_script, sections
from tests.support.oauth_peer import (
    ACCESS_TOKEN_TYPE,
    JWT_TYPE,
    TOKEN_EXCHANGE,
    Answer,
    OAuthPeer,
    mutual_tls_context,
    running_peer,
)
from tests.support.sandbox_stack import ALPHA, TRUST_DOMAIN, Stack, running_stack

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

FORGED = "forged-by-the-agent"
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"

# One request per check; a bound request's answer (the upstream's echo of what it received,
# token included) goes to /dev/null, so the agent's output holds only what the proxy said.
CHECK = """
A="http://{alpha}:{port}"
check() {{ name=$1; shift; echo "== $name"; curl -sS -m 20 -w '\\n%{{http_code}}\\n' "$@"; }}
"""


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as running:
        yield running


@pytest.fixture
def server_ca() -> trustme.CA:
    """The private CA that signs the token endpoint's own certificate."""
    return trustme.CA()


async def ok(stack: Stack, *args: str) -> Any:
    """The CLI off the event loop: the identity agent the gateway calls runs on it."""
    return await asyncio.to_thread(stack.gw.ok, *args)


async def agent_runs(stack: Stack, script: str, name: str = "box") -> str:
    """``script`` as the agent (an exec in the sandbox's fence, behind its proxy)."""
    result = await asyncio.to_thread(
        stack.gw.run, "sandbox", "exec", "--name", name, "--", "sh", "-c", script
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return str(result.stdout)


def loopback(host: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"host": host, "port": port, "allowed_ips": ["127.0.0.1"], **extra}


def grant_profile(
    profile_id: str, port: int, path: str, grant: dict[str, Any], **credential: Any
) -> dict[str, Any]:
    """A profile whose one credential is ``grant``, bound to ``ALPHA:port`` ``path``."""
    return {
        "id": profile_id,
        "credentials": [{"name": "access", "required": True, "token_grant": grant, **credential}],
        "endpoints": [loopback(ALPHA, port, path=path)],
    }


async def sandbox_with(stack: Stack, *profiles: dict[str, Any], name: str = "box") -> str:
    """Import ``profiles``, one runtime provider of each, and a sandbox with all of them
    attached whose policy admits every path of the upstream; returns its SPIFFE ID."""
    providers: list[str] = []
    for profile in profiles:
        document = stack.gw.write(f"{profile['id']}.yaml", profile)
        await ok(stack, "profile", "import", "-f", document)
        await ok(
            stack, "provider", "create", "--name", profile["id"], "--type", profile["id"],
            "--runtime-credentials",
        )  # fmt: skip
        providers += ["--provider", profile["id"]]
    policy = stack.gw.write("policy.yaml", stack.policy())
    await ok(stack, "sandbox", "create", "--name", name, *providers, "--policy", policy)
    view = await asyncio.to_thread(stack.gw.json, "sandbox", "get", name)
    return f"spiffe://{TRUST_DOMAIN}/grantbox/sandbox/{view['id']}"


def answer_of(text: str) -> tuple[int, dict[str, Any] | None]:
    """A check's status, and its body when the proxy answered JSON."""
    body, _, status = text.strip().rpartition("\n")
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return int(status), parsed


def refusal(text: str) -> tuple[int, str, str]:
    """A proxy answer's status, error code and reason."""
    status, body = answer_of(text)
    assert body is not None, text
    return status, str(body.get("error")), str(body.get("reason"))


async def shipped(stack: Stack, name: str = "box") -> str:
    """Everything the operator can read about a sandbox: events, logs, config."""
    parts = []
    for what in ("events", "logs", "config"):
        result = await asyncio.to_thread(stack.gw.ok, "sandbox", what, name, "-o", "json")
        parts.append(str(result.stdout))
    return "".join(parts)


async def until_shipped(stack: Stack, words: tuple[str, ...], name: str = "box") -> str:
    """The sandbox's events once one line holds every word (bounded wait)."""
    for _ in range(200):
        events = await asyncio.to_thread(stack.gw.ok, "sandbox", "events", name, "-o", "json")
        if any(all(w in line for w in words) for line in str(events.stdout).splitlines()):
            return str(events.stdout)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no event with {words}")


# -- RFC 8693 token exchange ----------------------------------------------------------------


@pytest.fixture
def exchange_peer(stack: Stack) -> Iterator[OAuthPeer]:
    """A token-exchange endpoint that verifies subject tokens with the agent's JWKS."""
    with running_peer(oidc_url=stack.agent.oidc_url, trust_domain=TRUST_DOMAIN) as peer:
        yield peer


def exchange_grant(peer: OAuthPeer, **extra: Any) -> dict[str, Any]:
    return {
        "token_endpoint": peer.token_url,
        "grant_type": "token_exchange",
        "audience": "alpha",
        "resource": ["https://alpha.example/"],
        "scopes": ["read"],
        **extra,
    }


async def test_token_exchange_from_a_sandbox_reaches_only_the_bound_upstream(
    stack: Stack, exchange_peer: OAuthPeer
) -> None:
    port = stack.upstream.port
    grant = exchange_grant(exchange_peer, requested_token_type=ACCESS_TOKEN_TYPE)
    spiffe_id = await sandbox_with(stack, grant_profile("exchange", port, "/v1/**", grant))
    checks = CHECK.format(alpha=ALPHA, port=port) + (
        f'check bound -o /dev/null -H "Authorization: Bearer {FORGED}" "$A/v1/exchange"\n'
        f'check again -o /dev/null "$A/v1/again"\n'
        f'check unbound -o /dev/null "$A/open/page"\n'
    )
    first = sections(await agent_runs(stack, checks))
    for name in ("bound", "again", "unbound"):
        assert answer_of(first[name]) == (200, None), (name, first[name])

    # The endpoint verified the subject token (signature by the agent's JWKS, aud = the
    # endpoint, sub in the trust domain) and got an RFC 8693 form; one request, cached.
    assert exchange_peer.rejections == []
    (form,) = exchange_peer.forms()
    assert form.pop("grant_type") == [TOKEN_EXCHANGE]
    assert form.pop("subject_token_type") == [JWT_TYPE]
    (subject_token,) = form.pop("subject_token")
    assert form == {
        "audience": ["alpha"],
        "resource": ["https://alpha.example/"],
        "scope": ["read"],
        "requested_token_type": [ACCESS_TOKEN_TYPE],
    }
    claims = jwt.decode(subject_token, options={"verify_signature": False})
    assert claims["sub"] == spiffe_id
    assert claims["aud"] in (exchange_peer.token_url, [exchange_peer.token_url])

    # The exchanged token went upstream on the bound paths only, the agent's copy gone.
    (token,) = exchange_peer.issued
    by_target = {r.target: r.header("authorization") for r in stack.upstream.requests}
    assert by_target == {
        "/v1/exchange": [f"Bearer {token}"],
        "/v1/again": [f"Bearer {token}"],
        "/open/page": [],
    }

    # The agent's view: neither the SVID nor the token (environment, files, /proc).
    view = parse(await agent_runs(stack, search_script([subject_token, token])))
    assert view.processes >= 2
    assert view.holders == [], f"readable in the sandbox: {view.holders}"
    assert not [k for k in view.environment if k.startswith("SPIFFE_")]
    assert all(token not in v and subject_token not in v for v in view.environment.values())
    # Nor what the operator sees.
    seen_by_operator = await shipped(stack)
    assert token not in seen_by_operator and subject_token not in seen_by_operator


@pytest.mark.parametrize(
    ("requested", "issued"),
    [(None, REFRESH_TOKEN_TYPE), (ACCESS_TOKEN_TYPE, JWT_TYPE)],
    ids=["not-presentable", "not-the-requested-type"],
)
async def test_an_unexpected_issued_token_type_is_token_malformed_and_nothing_goes_upstream(
    stack: Stack, exchange_peer: OAuthPeer, requested: str | None, issued: str
) -> None:
    exchange_peer.success_fields = {"issued_token_type": issued}
    extra = {"requested_token_type": requested} if requested else {}
    port = stack.upstream.port
    await sandbox_with(
        stack, grant_profile("exchange", port, "/v1/**", exchange_grant(exchange_peer, **extra))
    )
    checks = CHECK.format(alpha=ALPHA, port=port) + 'check bound "$A/v1/exchange"\n'
    output = await agent_runs(stack, checks)
    assert refusal(sections(output)["bound"]) == (502, "token_grant_failed", "token_malformed")
    assert exchange_peer.request_count == 1 and len(exchange_peer.issued) == 1
    assert stack.upstream.connections == 0
    (token,) = exchange_peer.issued
    (subject_token,) = exchange_peer.forms()[0]["subject_token"]
    assert token not in output and subject_token not in output
    events = await until_shipped(stack, ("token_grant_failed", "token_malformed"))
    seen_by_operator = events + await shipped(stack)
    assert token not in seen_by_operator and subject_token not in seen_by_operator


# -- RFC 8705 mutual TLS with the X.509-SVID ------------------------------------------------


def mtls_peer(stack: Stack, server_ca: trustme.CA, client_bundle: bytes) -> Any:
    """An https token endpoint (certificate from ``server_ca``) that requires a client
    certificate chaining to ``client_bundle`` whose URI SAN is the ``client_id``."""
    context = mutual_tls_context(server_ca.issue_cert("127.0.0.1"), client_bundle, tls12=True)
    return running_peer(
        oidc_url=None, trust_domain=TRUST_DOMAIN, client_auth="tls", server_context=context
    )


def mtls_grant(peer: OAuthPeer, server_ca: trustme.CA) -> dict[str, Any]:
    return {
        "token_endpoint": peer.token_url,
        "client_auth": "tls_client_auth",
        "token_endpoint_ca": server_ca.cert_pem.bytes().decode(),
        "audience": "alpha",
        "scopes": ["read"],
    }


def key_needles(key_pem: bytes) -> list[str]:
    """What would betray the X.509-SVID's key in a file: any PEM private key's armour, and
    each base64 line of this key's PEM."""
    body = [line for line in key_pem.decode().splitlines() if not line.startswith("-----")]
    assert body and all(len(line) >= 8 for line in body)
    return ["PRIVATE KEY-----", *body]


async def test_mutual_tls_from_a_sandbox_with_a_pinned_endpoint_ca(
    stack: Stack, server_ca: trustme.CA
) -> None:
    port = stack.upstream.port
    bundle = stack.agent.x509_bundle_pem()
    stranger = trustme.CA().cert_pem.bytes()  # an endpoint that trusts another trust domain
    with (
        mtls_peer(stack, server_ca, bundle) as peer,
        mtls_peer(stack, server_ca, stranger) as refusing,
    ):
        spiffe_id = await sandbox_with(
            stack,
            grant_profile("mtls", port, "/v1/**", mtls_grant(peer, server_ca)),
            grant_profile("refused", port, "/refused/**", mtls_grant(refusing, server_ca)),
        )
        checks = CHECK.format(alpha=ALPHA, port=port) + (
            f'check bound -o /dev/null -H "Authorization: Bearer {FORGED}" "$A/v1/mtls"\n'
            f'check unbound -o /dev/null "$A/open/page"\n'
            f'check refused "$A/refused/x"\n'
        )
        output = sections(await agent_runs(stack, checks))
    assert answer_of(output["bound"]) == (200, None), output["bound"]
    assert answer_of(output["unbound"]) == (200, None), output["unbound"]
    refused = refusal(output["refused"])
    assert refused == (502, "token_grant_failed", "token_endpoint_rejected"), output["refused"]

    # The endpoint saw the sandbox's X.509-SVID (chained to the bundle: the TLS layer
    # checked) with its SPIFFE ID as client_id, and no client assertion.
    assert peer.rejections == []
    (seen,) = peer.seen
    assert seen.peer_uri == spiffe_id
    form = seen.fields()
    assert form["client_id"] == [spiffe_id]
    assert "client_assertion" not in form and "client_assertion_type" not in form
    assert form["grant_type"] == ["client_credentials"]
    # The refusing endpoint turned the certificate down in the handshake: no request.
    assert refusing.request_count == 0 and refusing.tls_failures

    (token,) = peer.issued
    by_target = {r.target: r.header("authorization") for r in stack.upstream.requests}
    assert by_target == {"/v1/mtls": [f"Bearer {token}"], "/open/page": []}

    # The key the supervisor presented: the same SVID the sandbox's Workload API serves.
    sandbox_id = spiffe_id.rsplit("/", 1)[1]
    client = WorkloadIdentityClient(str(stack.agent.socket_path(sandbox_id)))
    try:
        svid = await client.fetch_x509_svid()
    finally:
        await client.aclose()
    assert svid.spiffe_id == spiffe_id

    leaf = x509.load_pem_x509_certificate(svid.cert_chain_pem)
    assert leaf.serial_number == seen.peer_serial

    # The agent's view holds neither the key nor the token.
    view = parse(
        await agent_runs(stack, search_script([*key_needles(svid.private_key_pem), token]))
    )
    assert view.processes >= 2
    assert view.holders == [], f"readable in the sandbox: {view.holders}"
    seen_by_operator = await shipped(stack)
    assert token not in seen_by_operator
    assert all(line not in seen_by_operator for line in key_needles(svid.private_key_pem)[1:])


# -- Manners: Retry-After -----------------------------------------------------------------

RETRY_AFTER = 3
# The agent asks as often as it likes (bounded: 600 requests at most, 20 ms apart) until it
# has three answers of 200; one line per request.
HAMMER = """
A="http://{alpha}:{port}"
passed=0
for i in $(seq 600); do
  code=$(curl -s -o /tmp/answer -w '%{{http_code}}' --max-time 20 "$A/v1/hammer")
  echo "$code $(tr -d '\\n' < /tmp/answer | head -c 300)"
  if [ "$code" = 200 ]; then
    passed=$((passed + 1))
    [ "$passed" -ge 3 ] && break
  fi
  sleep 0.02
done
"""


async def test_retry_after_keeps_the_endpoint_unasked_however_often_the_agent_asks(
    stack: Stack,
) -> None:
    port = stack.upstream.port
    with running_peer(
        oidc_url=stack.agent.oidc_url, trust_domain=TRUST_DOMAIN, client_auth="jwt_svid"
    ) as peer:
        grant = {
            "token_endpoint": peer.token_url,
            "client_assertion_type": JWT_SPIFFE,
            "audience": "alpha",
        }
        peer.answer_next(
            Answer(429, {"error": "slow_down"}, headers=[("retry-after", str(RETRY_AFTER))])
        )
        await sandbox_with(stack, grant_profile("busy", port, "/v1/**", grant))
        output = await agent_runs(stack, HAMMER.format(alpha=ALPHA, port=port))
    lines = output.strip().splitlines()
    statuses = [line.split(" ", 1)[0] for line in lines]
    refused = statuses.index("200")
    assert statuses[refused:] == ["200"] * 3, lines
    # Every request before the recovery was refused with the endpoint's failure...
    for line in lines[:refused]:
        code, body = line.split(" ", 1)
        assert code == "502", line
        answer = json.loads(body)
        assert (answer["error"], answer["reason"]) == ("token_grant_failed", "token_endpoint_error")
    # ...while the endpoint was asked once: many requests, one 429, then nothing for
    # RETRY_AFTER seconds (longer than the 1 s first backoff step it would take otherwise).
    assert refused >= 3, lines
    assert peer.request_count == 2, [s.fields().get("grant_type") for s in peer.seen]
    first, second = peer.seen
    assert second.at - first.at >= RETRY_AFTER
    assert peer.rejections == []  # both carried a JWT-SVID the endpoint verified
    # Then the grant recovered: one token, cached, on every later request.
    (token,) = peer.issued
    hammered = [r.header("authorization") for r in stack.upstream.requests]
    assert hammered == [[f"Bearer {token}"]] * 3
