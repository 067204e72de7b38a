"""What the demo checks, as plain functions over what it observed: the JSON a service
answered to the sandbox's ``curl`` and the lines the service logged.

A service's answer passes when its claims show a token minted for that service from the
sandbox's own identity: ``aud`` holds the service and ``account``, ``scope`` holds the
service, ``profile`` and ``email``, and ``azp``/``client_id``/``sub`` are the sandbox's
SPIFFE ID. Its log must hold a proof-of-life line for that request's caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_PROOF_OF_LIFE = re.compile(
    r"\b(?P<service>[\w.-]+): accepted request (?P<method>[A-Z]+) (?P<path>\S+) "
    r"from (?P<client>\S+) scope=(?P<scope>.*?)\s*$"
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class ProofOfLife:
    """One ``<service>: accepted request …`` log line, parsed."""

    service: str
    method: str
    path: str
    client: str
    scope: str


def proofs_of_life(lines: Iterable[str], service: str) -> list[ProofOfLife]:
    found = []
    for line in lines:
        match = _PROOF_OF_LIFE.search(line)
        if match and match.group("service") == service:
            found.append(ProofOfLife(**match.groupdict()))
    return found


def service_claims(answer: str | bytes) -> dict[str, Any]:
    """The ``claims`` object of a service's JSON answer (empty when there is none)."""
    try:
        document = json.loads(answer)
    except ValueError:
        return {}
    claims = document.get("claims") if isinstance(document, dict) else None
    return claims if isinstance(claims, dict) else {}


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def _scopes(claims: Mapping[str, Any]) -> list[str]:
    scope = claims.get("scope")
    return scope.split() if isinstance(scope, str) else []


def check_answer(service: str, answer: str | bytes, spiffe_id: str) -> list[Check]:
    """Checks on one service answer, for a sandbox whose SPIFFE ID is ``spiffe_id``."""
    claims = service_claims(answer)
    if not claims:
        return [Check(f"{service}: answered with claims", False, "no JSON claims in the answer")]
    audiences, scopes = _audiences(claims), _scopes(claims)
    return [
        Check(
            f"{service}: aud is [{service}, account]",
            audiences == [service, "account"],
            f"aud={audiences}",
        ),
        Check(
            f"{service}: scope holds {service}, profile and email",
            all(s in scopes for s in (service, "profile", "email")),
            f"scope={' '.join(scopes)!r}",
        ),
        Check(
            f"{service}: azp is the sandbox's SPIFFE ID",
            claims.get("azp") == spiffe_id,
            f"azp={claims.get('azp')}",
        ),
        Check(
            f"{service}: client_id and sub are the sandbox's SPIFFE ID",
            claims.get("client_id") == spiffe_id and claims.get("sub") == spiffe_id,
            f"client_id={claims.get('client_id')} sub={claims.get('sub')}",
        ),
    ]


def check_proof_of_life(service: str, lines: Iterable[str], spiffe_id: str) -> Check:
    proofs = [p for p in proofs_of_life(lines, service) if p.client == spiffe_id]
    return Check(
        f"{service}: logged a proof-of-life line for the sandbox",
        bool(proofs),
        f"{len(proofs)} accepted request(s) from {spiffe_id}",
    )


def check_keycloak_answer(
    service: str, answer: str | bytes, spiffe_id: str, issuer: str
) -> list[Check]:
    """Checks on one service answer when real Keycloak (realm ``issuer``) minted the token.

    Keycloak's token differs from the demo issuer's in what is not grantbox's to decide:
    ``sub`` is the client's service-account user, and the demo realm adds no ``account``
    audience or ``profile``/``email`` scopes. What grantbox is responsible for is the same:
    the audience and scope of the override, and a client that is the sandbox's identity.
    """
    claims = service_claims(answer)
    if not claims:
        return [Check(f"{service}: answered with claims", False, "no JSON claims in the answer")]
    audiences, scopes = _audiences(claims), _scopes(claims)
    return [
        Check(
            f"{service}: issued by Keycloak",
            claims.get("iss") == issuer,
            f"iss={claims.get('iss')}",
        ),
        Check(f"{service}: aud is [{service}]", audiences == [service], f"aud={audiences}"),
        Check(
            f"{service}: scope holds {service}", service in scopes, f"scope={' '.join(scopes)!r}"
        ),
        Check(
            f"{service}: azp and client_id are the sandbox's SPIFFE ID",
            claims.get("azp") == spiffe_id and claims.get("client_id") == spiffe_id,
            f"azp={claims.get('azp')} client_id={claims.get('client_id')}",
        ),
    ]
