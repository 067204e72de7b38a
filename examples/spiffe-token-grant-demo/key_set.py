"""Public keys from a JWKS, found directly or through OIDC discovery, cached and refreshed.

The issuer verifies JWT-SVIDs with the identity agent's keys (``/.well-known/openid-configuration``
→ ``jwks_uri``); the alpha/beta services verify access tokens with the issuer's ``/jwks``.
Both need the same behaviour: keep the set for ``max_age``, re-fetch early when a token names
an unknown ``kid`` (keys rotate), and never fetch more often than ``min_interval`` so a flood
of tokens with made-up key ids cannot turn into a flood of requests to the key publisher.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

log = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_DOCUMENT_BYTES = 1024 * 1024
# Key uses that may verify signatures: OIDC discovery providers publish ``sig``, SPIFFE
# bundles ``jwt-svid``. Anything else (``enc``, ``x509-svid``) is not for JWTs.
SIGNING_USES = frozenset({"sig", "jwt-svid"})
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class KeySetError(Exception):
    """A key set or discovery document could not be fetched or understood."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    alg: str | None
    """The JWK's declared algorithm; a token must use exactly it when present."""
    public_key: PublicKey


def parse_key_set(document: Any) -> dict[str, VerificationKey]:
    """The usable public signing keys of a JWKS document, by ``kid``.

    Keys without ``kid``, of other types or uses, carrying private members or unparseable
    are skipped; a ``kid`` that appears twice is dropped entirely rather than guessed.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetError("not a JWKS document (no 'keys' list)")
    keys: dict[str, VerificationKey] = {}
    seen: set[str] = set()
    for entry in document["keys"]:
        key = _parse_key(entry)
        if key is None:
            continue
        if key.kid in seen:
            keys.pop(key.kid, None)
            continue
        seen.add(key.kid)
        keys[key.kid] = key
    return keys


def _parse_key(entry: Any) -> VerificationKey | None:
    if not isinstance(entry, dict):
        return None
    kid, use, alg = entry.get("kid"), entry.get("use"), entry.get("alg")
    if not isinstance(kid, str) or not kid:
        return None
    if entry.get("kty") not in ("RSA", "EC") or "d" in entry:
        return None
    if use is not None and use not in SIGNING_USES:
        return None
    if alg is not None and not isinstance(alg, str):
        return None
    try:
        public_key = jwt.PyJWK.from_dict(entry).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return None
    return VerificationKey(kid=kid, alg=alg, public_key=public_key)


_CURVE_OF = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def key_fits(alg: str, key: PublicKey) -> bool:
    """Whether a JWS algorithm can be used with this key (RSA for RS/PS, the right curve
    for ES); checked before verification so a mismatch is a refusal, not a crash."""
    if alg[:2] in ("RS", "PS"):
        return isinstance(key, rsa.RSAPublicKey)
    curve = _CURVE_OF.get(alg)
    return (
        curve is not None
        and isinstance(key, ec.EllipticCurvePublicKey)
        and (key.curve.name == curve)
    )


def discovery_document_url(url: str) -> str:
    """Accept an issuer base URL or the discovery document's own URL."""
    if urlsplit(url).path.endswith(DISCOVERY_PATH):
        return url
    return url.rstrip("/") + DISCOVERY_PATH


def jwks_uri_of(document: Any) -> str:
    uri = document.get("jwks_uri") if isinstance(document, dict) else None
    if not isinstance(uri, str) or urlsplit(uri).scheme not in ("http", "https"):
        raise KeySetError("discovery document has no http(s) jwks_uri")
    return uri


@dataclass(frozen=True)
class RefreshPolicy:
    max_age: float = 300.0
    """A key set older than this is fetched again before use."""
    min_interval: float = 5.0
    """No two fetch attempts are closer together than this, whatever the reason."""


@dataclass(frozen=True)
class FetchState:
    fetched_at: float | None = None
    attempted_at: float | None = None


def should_fetch(now: float, state: FetchState, policy: RefreshPolicy, kid_known: bool) -> bool:
    """Whether to (re)fetch the key set before looking up a ``kid``."""
    if state.attempted_at is not None and now - state.attempted_at < policy.min_interval:
        return False
    if state.fetched_at is None or now - state.fetched_at >= policy.max_age:
        return True
    return not kid_known


class KeySetSource:
    """The current key set of one publisher, fetched lazily over HTTP."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        jwks_url: str | None = None,
        discovery_url: str | None = None,
        policy: RefreshPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (jwks_url is None) == (discovery_url is None):
            raise ValueError("give exactly one of jwks_url and discovery_url")
        self._http = http
        self._jwks_url = jwks_url
        self._discovery_url = discovery_document_url(discovery_url) if discovery_url else None
        self._policy = policy or RefreshPolicy()
        self._clock = clock
        self._state = FetchState()
        self._keys: dict[str, VerificationKey] = {}
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def keys_for(self, kid: str) -> Mapping[str, VerificationKey]:
        """The key set, re-fetched first when stale or when it lacks ``kid`` (rate limited).

        Raises KeySetError only when no key set was ever obtained; after that a failed
        re-fetch keeps the last good set.
        """
        async with self._lock:
            now = self._clock()
            if should_fetch(now, self._state, self._policy, kid in self._keys):
                await self._fetch(now)
            if self._state.fetched_at is None:
                raise KeySetError("no key set available yet")
            return dict(self._keys)

    async def _fetch(self, now: float) -> None:
        self._state = FetchState(self._state.fetched_at, now)
        self.fetches += 1
        try:
            if self._discovery_url is not None:
                url = jwks_uri_of(await self._get_json(self._discovery_url))
            else:
                assert self._jwks_url is not None
                url = self._jwks_url
            keys = parse_key_set(await self._get_json(url))
        except KeySetError as exc:
            log.warning("key set fetch failed: %s", exc)
            return
        self._keys = keys
        self._state = FetchState(now, now)

    async def _get_json(self, url: str) -> Any:
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise KeySetError(f"GET {url} answered {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise KeySetError(f"GET {url} answered more than {MAX_DOCUMENT_BYTES} B")
        except httpx.HTTPError as exc:
            raise KeySetError(f"GET {url} failed ({type(exc).__name__})") from None
        try:
            return json.loads(body)
        except ValueError:
            raise KeySetError(f"GET {url} did not answer JSON") from None


def key_set_http_client(timeout: float = 5.0, ca_file: str | None = None) -> httpx.AsyncClient:
    """An HTTP client for key publishers: bounded time, no redirects, no proxy variables;
    ``ca_file`` trusts a private CA (e.g. SPIRE's OIDC discovery provider in a cluster)."""
    verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=timeout),
        follow_redirects=False,
        trust_env=False,
        verify=verify,
    )
