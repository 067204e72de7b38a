"""A private CA for an https token endpoint, the way an operator gives it to every sandbox:
``grantbox up --upstream-ca FILE`` (a real ``up`` process, its local driver passing the file
to each supervisor's ``--upstream-ca``). A sandbox's supervisor then presents its X.509-SVID
(RFC 8705 mutual TLS) to a token endpoint whose certificate that CA signed and whose profile
names no ``token_endpoint_ca``; an endpoint signed by any other CA stays untrusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.oauth_peer import OAuthPeer, mutual_tls_context, running_peer
from tests.support.proxy_upstream import RecordingUpstream, running_upstream
from tests.support.up_process import UpProcess

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

ALPHA = "alpha.localhost"
TRUST_DOMAIN = "grantbox.local"  # what `grantbox up` uses unless told otherwise


@pytest.fixture
def upstream_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def up(tmp_path: Path, upstream_ca: trustme.CA) -> Iterator[UpProcess]:
    ca_file = tmp_path / "upstream-ca.pem"
    upstream_ca.cert_pem.write_to_path(str(ca_file))
    running = UpProcess(tmp_path, ["--upstream-ca", str(ca_file)])
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with running_upstream() as running:
        yield running


def x509_bundle(up: UpProcess) -> bytes:
    """The trust domain's X.509 bundle: the CA certificate of `up`'s identity agent (read
    from its state directory: the agent publishes only its JWT bundle)."""
    stored = (up.root / "state" / "identity" / "x509-ca.pem").read_bytes()
    certificate = x509.load_pem_x509_certificate(stored)
    return certificate.public_bytes(serialization.Encoding.PEM)


@contextlib.contextmanager
def mtls_peer(server_ca: trustme.CA, bundle: bytes) -> Iterator[OAuthPeer]:
    context = mutual_tls_context(server_ca.issue_cert("127.0.0.1"), bundle, tls12=True)
    with running_peer(
        oidc_url=None, trust_domain=TRUST_DOMAIN, client_auth="tls", server_context=context
    ) as peer:
        yield peer


def profile(profile_id: str, peer: OAuthPeer, port: int, path: str) -> dict[str, Any]:
    grant = {"token_endpoint": peer.token_url, "client_auth": "tls_client_auth", "audience": "a"}
    endpoint = {"host": ALPHA, "port": port, "path": path, "allowed_ips": ["127.0.0.1"]}
    return {
        "id": profile_id,
        "credentials": [{"name": "access", "required": True, "token_grant": grant}],
        "endpoints": [endpoint],
    }


def answer_of(text: str) -> tuple[int, dict[str, Any] | None]:
    body, _, status = text.strip().rpartition("\n")
    return int(status), (json.loads(body) if body else None)


async def test_the_upstream_ca_of_grantbox_up_is_trusted_for_token_endpoints(
    up: UpProcess, upstream_ca: trustme.CA, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    bundle = await asyncio.to_thread(x509_bundle, up)
    trusted_peer = mtls_peer(upstream_ca, bundle)
    stranger_peer = mtls_peer(trustme.CA(), bundle)  # signed by a CA nobody gave us
    with trusted_peer as trusted, stranger_peer as stranger:
        port = upstream.port
        policy = {
            "network": [
                {
                    "name": "alpha",
                    "endpoints": [{"host": ALPHA, "port": port, "allowed_ips": ["127.0.0.1"]}],
                }
            ]
        }
        documents = {
            "policy.yaml": policy,
            "trusted.yaml": profile("trusted", trusted, port, "/v1/**"),
            "stranger.yaml": profile("stranger", stranger, port, "/other/**"),
        }
        for name, document in documents.items():
            (tmp_path / name).write_text(yaml.safe_dump(document))

        def operator() -> str:
            gb = up.gb
            for name in ("trusted", "stranger"):
                gb.ok("profile", "import", "-f", str(tmp_path / f"{name}.yaml"))
                gb.ok("provider", "create", "--name", name, "--type", name, "--runtime-credentials")
            gb.ok(
                "sandbox", "create", "box", "--provider", "trusted", "--provider", "stranger",
                "--policy", str(tmp_path / "policy.yaml"), "--wait", "--", "sleep", "infinity",
            )  # fmt: skip
            script = (
                f"A=http://{ALPHA}:{port}\n"
                "echo '== trusted'; curl -sS -o /dev/null -w '\\n%{http_code}\\n' $A/v1/x\n"
                "echo '== stranger'; curl -sS -w '\\n%{http_code}\\n' $A/other/x\n"
            )
            result = gb.run("sandbox", "exec", "box", "--", "sh", "-c", script)
            assert result.returncode == 0, (result.stdout, result.stderr)
            view = json.loads(gb.ok("sandbox", "get", "box", "-o", "json").stdout)
            return f"{view['id']}\n{result.stdout}"

        sandbox_id, _, output = (await asyncio.to_thread(operator)).partition("\n")
    found = dict(
        (part.partition("\n")[0], part.partition("\n")[2]) for part in output.split("== ")[1:]
    )
    assert answer_of(found["trusted"]) == (200, None), found["trusted"]
    status, answer = answer_of(found["stranger"])
    assert status == 502 and answer is not None
    assert (answer["error"], answer["reason"]) == (
        "token_grant_failed",
        "token_endpoint_unreachable",
    )
    # The trusted endpoint saw the sandbox's X.509-SVID and issued the token that went up.
    (seen,) = trusted.seen
    assert seen.peer_uri == f"spiffe://{TRUST_DOMAIN}/grantbox/sandbox/{sandbox_id}"
    (token,) = trusted.issued
    assert [(r.target, r.header("authorization")) for r in upstream.requests] == [
        ("/v1/x", [f"Bearer {token}"])
    ]
    # The other one was never asked: our side refused its certificate in the handshake.
    assert stranger.request_count == 0
