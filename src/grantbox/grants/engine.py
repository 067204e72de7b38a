"""The grant engine: binding in, access token out, the issuer asked as rarely as correct.

Per cache key at most one token request runs at a time (single-flight); callers that
arrive meanwhile wait for it. A token in its last 10 % of life is renewed in the background
while callers keep receiving it. A failure is remembered for a jittered, growing backoff and
handed to every caller in that window, so a broken issuer sees a trickle of requests.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable, Iterable

import prometheus_client

from grantbox.profiles import AuthStyle, GrantBinding, GrantType, token_endpoint_problem

from .answer import TokenAnswer, check_exchanged_token
from .cache import AccessToken, Lookup, TokenCache, decide
from .client import TokenEndpointClient
from .errors import GrantError, GrantMisconfigured, TokenEndpointError, WorkloadIdentityUnavailable
from .freshness import worth_fresh_svid
from .lifetime import cache_ttl
from .metrics import GrantMetrics
from .request import CacheKey, cache_key, grant_kind, token_request_form
from .svid import SvidSource, X509SvidSource, identity_failure
from .tls import ClientCertificate

log = logging.getLogger(__name__)
_system_random = random.SystemRandom()
_SERVES_TOKEN = frozenset({Lookup.HIT, Lookup.HIT_RENEW})


# Runs of base64url characters: what a JWT's segments (and any piece of them) look like.
_BASE64URL_RUN = re.compile(r"[A-Za-z0-9_-]{12,}")
# Longer than any word or id an error message needs: an SVID segment, signature or token.
_CREDENTIAL_LIKE = 40


def redact_secret(detail: str, secret: str) -> str:
    """``detail`` without any run of 12+ base64url characters taken from ``secret`` and
    without any run of 40+ (a piece of some other credential, e.g. an earlier SVID).

    A token endpoint may quote the client assertion back (whole, one segment, or a piece cut
    by the length limit) in its OAuth error fields; the detail goes to logs and events.
    """

    def hide(match: re.Match[str]) -> str:
        run = match.group(0)
        return "[redacted]" if run in secret or len(run) >= _CREDENTIAL_LIKE else run

    return _BASE64URL_RUN.sub(hide, detail)


def _copy(error: GrantError) -> GrantError:
    """A fresh exception with the same reason and detail, so callers never share one."""
    return type(error)(error.detail)


def _redacted(error: GrantError, secret: str) -> GrantError:
    """The same failure with ``secret`` (and credential-like runs) cut from its detail; what
    the answer said about retrying is kept for the backoff."""
    clean = type(error)(redact_secret(error.detail, secret))
    clean.status = error.status
    clean.retry_after = error.retry_after
    return clean


def _retrieve(task: asyncio.Task[AccessToken]) -> None:
    # A background renewal may fail with nobody awaiting it; its failure is in the cache.
    if not task.cancelled():
        task.exception()


class GrantEngine:
    """Obtains, caches and renews access tokens for grant bindings.

    ``identity`` mints the JWT-SVIDs (a :class:`grantbox.identity.WorkloadIdentityClient`);
    ``x509`` serves the X.509-SVID for mutual-TLS client auth (``identity`` itself when it
    can, as the Workload API client does).
    The timeouts configure the token endpoint client unless a ready ``client`` is given
    (e.g. one trusting a private CA); the engine owns it and closes it in :meth:`aclose`.
    ``identity_timeout`` bounds each SVID fetch. Metrics go to ``registry`` (a private one,
    readable as :attr:`registry`, when None). ``clock`` (monotonic seconds) and
    ``jitter`` (uniform in [0, 1)) are injectable so cache timing can be tested exactly;
    ``wall_clock`` (Unix seconds) judges how old a refused SVID was.
    A token endpoint that refuses a JWT-SVID which was not new as ``invalid_client`` gets
    one more request with a fresh SVID (:mod:`grantbox.grants.freshness`).
    One engine serves one event loop.
    """

    def __init__(
        self,
        identity: SvidSource,
        *,
        connect_timeout: float = 5.0,
        total_timeout: float = 15.0,
        identity_timeout: float = 10.0,
        max_entries: int = 4096,
        registry: prometheus_client.CollectorRegistry | None = None,
        client: TokenEndpointClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = _system_random.random,
        x509: X509SvidSource | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._identity = identity
        if x509 is None and isinstance(identity, X509SvidSource):
            x509 = identity
        self._x509 = x509
        self._identity_timeout = identity_timeout
        self._client = client or TokenEndpointClient(
            connect_timeout=connect_timeout, total_timeout=total_timeout
        )
        self._cache = TokenCache(max_entries)
        self._metrics = GrantMetrics(registry)
        self._clock = clock
        self._jitter = jitter
        self._wall_clock = wall_clock
        self._inflight: dict[CacheKey, asyncio.Task[AccessToken]] = {}
        self._keys: dict[GrantBinding, CacheKey] = {}  # cache_key() of each binding seen
        self._attached: frozenset[CacheKey] | None = None
        self._generation = 0
        self._closed = False

    async def obtain(self, binding: GrantBinding) -> AccessToken:
        """A valid token for ``binding``, or a :class:`GrantError` saying why not."""
        if self._closed:
            raise GrantMisconfigured("grant engine is closed")
        key = self._keys.get(binding)
        if key is None:
            if len(self._keys) >= self._cache.max_entries:
                self._keys.clear()
            key = self._keys[binding] = cache_key(binding)
        entry = self._cache.get(key)
        running = self._inflight.get(key)
        lookup = decide(entry, self._clock(), running is not None)
        if entry is not None and entry.token is not None and lookup in _SERVES_TOKEN:
            self._metrics.hits.inc()
            if lookup is Lookup.HIT_RENEW:
                self._metrics.refreshes.inc()
                self._start(key, binding)
            return entry.token
        if entry is not None and entry.failure is not None and lookup is Lookup.FAILED:
            self._metrics.failures_served.labels(reason=entry.failure.reason).inc()
            raise _copy(entry.failure)
        if running is None:
            self._metrics.misses.inc()
            running = self._start(key, binding)
        else:
            self._metrics.coalesced.inc()
        try:
            return await asyncio.shield(running)
        except GrantError as error:
            raise _copy(error) from None

    def replace_bindings(self, bindings: Iterable[GrantBinding]) -> None:
        """The bindings now attached; entries of every other binding are dropped.

        Requests already running for a detached binding finish for their callers but do not
        put their answer in the cache.
        """
        attached = frozenset(cache_key(b) for b in bindings)
        self._attached = attached
        self._keys.clear()
        self._generation += 1
        self._cache.retain(attached.__contains__)
        self._metrics.entries.set(len(self._cache))

    @property
    def registry(self) -> prometheus_client.CollectorRegistry:
        """Where this engine's metrics are registered."""
        return self._metrics.registry

    def cached_keys(self) -> list[CacheKey]:
        """Keys currently held, least recently used first (for diagnostics and tests)."""
        return list(self._cache.keys())

    async def aclose(self) -> None:
        """Cancel running requests and close the connection pool."""
        self._closed = True
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()

    def _start(self, key: CacheKey, binding: GrantBinding) -> asyncio.Task[AccessToken]:
        task = asyncio.create_task(
            self._grant(key, binding, self._generation), name=f"grant {binding.id}"
        )
        self._inflight[key] = task
        task.add_done_callback(_retrieve)
        return task

    async def _grant(self, key: CacheKey, binding: GrantBinding, generation: int) -> AccessToken:
        started = self._clock()
        try:
            try:
                token, ttl = await self._request(binding, started)
            except GrantError as error:
                self._failed(key, binding, generation, error, started)
                raise
            except Exception as exc:  # a defect below us still fails closed, with a reason
                defect = TokenEndpointError(f"unexpected {type(exc).__name__} during token grant")
                self._failed(key, binding, generation, defect, started)
                raise defect from None
            self._metrics.grant_finished(None, self._clock() - started)
            if self._keeps(key, generation):
                self._cache.store_token(key, token, ttl, started)
                self._metrics.entries.set(len(self._cache))
            return token
        finally:
            if self._inflight.get(key) is asyncio.current_task():
                del self._inflight[key]

    async def _request(self, binding: GrantBinding, started: float) -> tuple[AccessToken, int]:
        # The endpoint is checked before an SVID is minted for it.
        problem = token_endpoint_problem(binding.token_endpoint)
        if problem is not None:
            raise GrantMisconfigured(problem)
        assertion = await self._fetch_svid(binding)
        try:
            answer = await self._exchange(binding, assertion)
        except GrantError as error:
            if not assertion or not worth_fresh_svid(
                error.reason, error.detail, assertion, self._wall_clock()
            ):
                raise
            # The issuer may have refused the SVID for its age (a Workload API cache served
            # it); the source has no cache of ours, so asking again gets what it serves now.
            fresh = await self._fetch_svid(binding)
            if fresh == assertion:
                raise
            log.info(
                "token endpoint refused a JWT-SVID that was not new; retrying once with a "
                "fresh one",
                extra={"fields": {"binding": binding.id}},
            )
            self._metrics.fresh_svid_retries.inc()
            answer = await self._exchange(binding, fresh)
        ttl = cache_ttl(answer.expires_in, binding.cache_ttl_seconds)
        return AccessToken(answer.access_token, started + ttl), ttl

    async def _fetch_svid(self, binding: GrantBinding) -> str:
        """A fresh JWT-SVID for the binding, or "" when its grant sends none."""
        if not grant_kind(binding).needs_jwt_svid:
            return ""
        if not binding.svid_audience.strip():
            raise GrantMisconfigured("binding has no JWT-SVID audience")
        try:
            async with asyncio.timeout(self._identity_timeout):
                svid = await self._identity.fetch_jwt_svid(binding.svid_audience)
        except TimeoutError:
            raise WorkloadIdentityUnavailable(
                f"JWT-SVID fetch did not complete within {self._identity_timeout:g} s"
            ) from None
        except Exception as exc:
            raise identity_failure(exc) from None
        assertion = getattr(svid, "token", None)
        if not isinstance(assertion, str) or not assertion:
            raise WorkloadIdentityUnavailable("workload API returned an empty JWT-SVID")
        return assertion

    async def _fetch_certificate(self) -> ClientCertificate:
        """The current X.509-SVID, asked for right before the request that presents it, so a
        rotation is picked up without touching cached tokens."""
        if self._x509 is None:
            raise WorkloadIdentityUnavailable("no X.509-SVID source is configured")
        try:
            async with asyncio.timeout(self._identity_timeout):
                return await self._x509.fetch_x509_svid()
        except TimeoutError:
            raise WorkloadIdentityUnavailable(
                f"X.509-SVID fetch did not complete within {self._identity_timeout:g} s"
            ) from None
        except Exception as exc:
            raise identity_failure(exc, "X.509-SVID") from None

    async def _exchange(self, binding: GrantBinding, assertion: str) -> TokenAnswer:
        """One token request with ``assertion`` (the JWT-SVID, "" when the grant sends none)."""
        kind = grant_kind(binding)
        certificate = await self._fetch_certificate() if kind.needs_x509_svid else None
        form = token_request_form(
            binding, assertion, tls_spiffe_id=certificate.spiffe_id if certificate else ""
        )
        try:
            answer = await self._client.request_token(
                binding.token_endpoint,
                form,
                pinned_ca_pem=binding.token_endpoint_ca,
                certificate=certificate,
            )
        except GrantError as error:
            raise _redacted(error, assertion) from None
        if kind.grant_type is GrantType.TOKEN_EXCHANGE:
            raw_header = binding.header_style != AuthStyle.BEARER
            check_exchanged_token(answer, binding.requested_token_type, raw_header)
        return answer

    def _failed(
        self,
        key: CacheKey,
        binding: GrantBinding,
        generation: int,
        error: GrantError,
        started: float,
    ) -> None:
        now = self._clock()
        self._metrics.grant_finished(error.reason, now - started)
        log.warning(
            "token grant failed",
            extra={
                "fields": {"binding": binding.id, "reason": error.reason, "detail": error.detail}
            },
        )
        if self._keeps(key, generation):
            self._cache.store_failure(key, error, now, self._jitter())
            self._metrics.entries.set(len(self._cache))

    def _keeps(self, key: CacheKey, generation: int) -> bool:
        """Whether an answer may enter the cache: not if its binding was detached meanwhile."""
        if self._attached is None or key in self._attached:
            return True
        return generation == self._generation
