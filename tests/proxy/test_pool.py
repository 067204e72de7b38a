"""The proxy over worker processes (``ProxyPool``): the wire and the metric sums as plain
data, the worker's token source with an in-test parent, and the pool itself with real
worker processes, the real identity agent, a real token endpoint and curl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from grantbox.grants import (
    GrantEngine,
    GrantFailure,
    GrantMetrics,
    TokenEndpointRejected,
)
from grantbox.grants.errors import ERRORS_BY_REASON
from grantbox.profiles import StaticSecrets
from grantbox.proxy import Limits, ProxyPool
from grantbox.proxy.pool import REUSE_SECONDS, ParentTokens, PoolMetrics, merge, snapshot
from grantbox.proxy.pool.wire import (
    MAX_FRAME,
    WireError,
    config_from_wire,
    config_to_wire,
    error_from_wire,
    error_to_wire,
    frame,
    frame_length,
    limits_from_wire,
    limits_to_wire,
    parse,
)
from tests.support.proxy_clients import curl
from tests.support.proxy_harness import endpoint, grant_profile, make_config
from tests.support.proxy_upstream import RecordingUpstream
from tests.support.token_endpoint import TokenEndpoint

from .conftest import LOOPBACK


# -- the wire --------------------------------------------------------------------------
def test_frames_round_trip_and_refuse_what_no_side_sends() -> None:
    message = {"t": "token", "id": 7, "binding": "a:b@c:443/**"}
    data = frame(message)
    assert frame_length(data[:4]) == len(data) - 4
    assert parse(data[4:]) == message
    with pytest.raises(WireError):
        frame_length((MAX_FRAME + 1).to_bytes(4, "big"))
    for body in (b"not json", b"[1, 2]", b'{"no": "type"}'):
        with pytest.raises(WireError):
            parse(body)


def test_a_config_crosses_with_its_secrets_and_limits_unchanged() -> None:
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", 443)], token_endpoint="https://sso.test/t"
    )
    config = make_config(
        policy=[endpoint("mirror.test", 443)], providers=[("alpha", profile)]
    ).with_secrets(StaticSecrets({"alpha:key": "s3cret"}, {"alpha:key": "GBX-PLACEHOLDER"}))
    back = config_from_wire(json.loads(json.dumps(config_to_wire(config))))
    assert back == config
    assert back.revision == config.revision
    assert back.secrets.values == {"alpha:key": "s3cret"}
    assert back.secrets.placeholders == {"alpha:key": "GBX-PLACEHOLDER"}
    limits = Limits(idle_timeout=3.0, max_connections=9, event_buffer=5)
    assert limits_from_wire(json.loads(json.dumps(limits_to_wire(limits)))) == limits


@pytest.mark.parametrize("reason", list(GrantFailure))
def test_every_grant_failure_crosses_as_the_same_error(reason: GrantFailure) -> None:
    error = ERRORS_BY_REASON[reason]("what happened")
    error.status, error.retry_after = 429, 2.5
    back = error_from_wire(json.loads(json.dumps(error_to_wire(error))))
    assert type(back) is type(error)
    assert (back.reason, back.detail, back.status, back.retry_after) == (
        reason,
        "what happened",
        429,
        2.5,
    )


def test_an_unknown_reason_fails_closed_as_an_endpoint_error() -> None:
    back = error_from_wire({"reason": "made_up", "detail": "x"})
    assert back.reason is GrantFailure.TOKEN_ENDPOINT_ERROR


# -- metric sums -----------------------------------------------------------------------
def _worker_registry(requests: int, open_connections: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("grantbox_proxy_requests", "Requests.", ["decision"], registry=registry)
    counter.labels("allowed").inc(requests)
    Gauge("grantbox_proxy_active_connections", "Open.", registry=registry).set(open_connections)
    return registry


def _samples(metrics: Any) -> dict[str, float]:
    text = generate_latest(metrics).decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and "_created" not in line
    }


def test_the_pool_shows_the_sum_of_its_workers_and_keeps_a_dead_workers_counts() -> None:
    collector = PoolMetrics()
    collector.update(0, snapshot(_worker_registry(5, 2)))
    collector.update(1, snapshot(_worker_registry(7, 1)))
    registry = CollectorRegistry()
    registry.register(collector)
    assert _samples(registry) == {
        'grantbox_proxy_requests_total{decision="allowed"}': 12.0,
        "grantbox_proxy_active_connections": 3.0,
    }
    collector.retire(1)  # its counts stay, its open connections are gone
    collector.update(1, snapshot(_worker_registry(1, 0)))  # the replacement starts at zero
    assert _samples(registry) == {
        'grantbox_proxy_requests_total{decision="allowed"}': 13.0,
        "grantbox_proxy_active_connections": 2.0,
    }


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=8))
def test_summing_split_counts_gives_the_total(parts: list[int]) -> None:
    merged = merge(snapshot(_worker_registry(n, n % 3)) for n in parts)
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in merged
        for sample in metric.samples
    }
    assert values[("grantbox_proxy_requests_total", (("decision", "allowed"),))] == sum(parts)
    assert values[("grantbox_proxy_active_connections", ())] == sum(n % 3 for n in parts)


# -- the worker's token source ---------------------------------------------------------
class _Parent:
    """An in-test parent: answers questions as scripted and counts them."""

    def __init__(self) -> None:
        self.questions: list[tuple[str, str]] = []
        self.answer: dict[str, Any] = {"value": "tok-1", "remaining": 300.0}
        self.gate = asyncio.Event()
        self.gate.set()

    async def ask(self, revision: str, binding_id: str) -> dict[str, Any]:
        self.questions.append((revision, binding_id))
        await self.gate.wait()
        return dict(self.answer)


def _binding() -> Any:
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", 443)], token_endpoint="https://sso.test/t"
    )
    (binding,) = make_config(providers=[("alpha", profile)]).bindings
    return binding


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_worker_reuses_a_token_for_a_second_at_most_then_asks_again() -> None:
    parent, clock, binding = _Parent(), _Clock(), _binding()
    tokens = ParentTokens(parent.ask, clock=clock)
    tokens.use_revision("r1")
    assert (await tokens.obtain(binding)).value == "tok-1"
    clock.now += REUSE_SECONDS / 2
    await tokens.obtain(binding)
    assert parent.questions == [("r1", binding.id)]
    clock.now += REUSE_SECONDS
    parent.answer = {"value": "tok-2", "remaining": 300.0}
    assert (await tokens.obtain(binding)).value == "tok-2"
    assert len(parent.questions) == 2


async def test_a_token_about_to_expire_is_not_reused_and_an_update_drops_reused_ones() -> None:
    parent, clock, binding = _Parent(), _Clock(), _binding()
    tokens = ParentTokens(parent.ask, clock=clock)
    parent.answer = {"value": "tok-1", "remaining": 0.0}
    await tokens.obtain(binding)
    await tokens.obtain(binding)
    assert len(parent.questions) == 2
    parent.answer = {"value": "tok-1", "remaining": 300.0}
    await tokens.obtain(binding)
    tokens.replace_bindings(make_config().bindings)
    await tokens.obtain(binding)
    assert len(parent.questions) == 4


async def test_a_worker_counts_what_its_reuse_saves_as_cache_hits_and_shared_waits() -> None:
    parent, clock, binding = _Parent(), _Clock(), _binding()
    metrics = GrantMetrics(CollectorRegistry())
    tokens = ParentTokens(parent.ask, clock=clock, metrics=metrics)
    parent.gate.clear()
    first = [asyncio.create_task(tokens.obtain(binding)) for _ in range(3)]
    await asyncio.sleep(0.05)
    parent.gate.set()
    await asyncio.gather(*first)
    await tokens.obtain(binding)  # reused
    clock.now += REUSE_SECONDS
    await tokens.obtain(binding)  # asked again: the parent's engine counts that one
    assert len(parent.questions) == 2
    assert _samples(metrics.registry)["grantbox_token_cache_coalesced_waits_total"] == 2.0
    assert _samples(metrics.registry)["grantbox_token_cache_hits_total"] == 1.0
    assert _samples(metrics.registry)["grantbox_token_cache_misses_total"] == 0.0


async def test_concurrent_requests_of_a_worker_share_one_question_and_one_failure() -> None:
    parent, binding = _Parent(), _binding()
    tokens = ParentTokens(parent.ask)
    parent.gate.clear()
    parent.answer = {"error": error_to_wire(TokenEndpointRejected("invalid_client"))}
    waiting = [asyncio.create_task(tokens.obtain(binding)) for _ in range(5)]
    await asyncio.sleep(0.05)
    waiting[0].cancel()  # one caller going away does not cancel the others' answer
    parent.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert len(parent.questions) == 1
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(isinstance(r, TokenEndpointRejected) for r in results[1:])
    assert all(r.detail == "invalid_client" for r in results[1:])  # type: ignore[union-attr]


# -- the pool, with real worker processes (agent, engine, issuer: conftest) ------------
def _config(issuer: TokenEndpoint, port: int) -> Any:
    profile = grant_profile(
        "alpha",
        [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)],
        token_endpoint=issuer.token_url,
    )
    return make_config(providers=[("alpha", profile)])


@dataclass
class _Running:
    pool: ProxyPool
    proxy: str  # the pool's URL for curl -x
    ca_file: Path  # the interception CA, for curl --cacert


@contextlib.asynccontextmanager
async def _tls_pool(
    tokens: Any,
    issuer: TokenEndpoint,
    upstream: RecordingUpstream,
    ca: Path,
    folder: Path,
    **options: Any,
) -> AsyncIterator[_Running]:
    """A started two-worker pool whose provider binds ``alpha.localhost`` on ``upstream``."""
    pool = ProxyPool(
        _config(issuer, upstream.port), tokens, workers=2, upstream_ca_file=ca, **options
    )
    ca_file = folder / "proxy-ca.pem"
    ca_file.write_bytes(pool.ca_cert_pem)
    async with pool:
        await pool.start(tcp=("127.0.0.1", 0))
        assert pool.tcp_address is not None
        yield _Running(pool, f"http://127.0.0.1:{pool.tcp_address[1]}", ca_file)


@contextlib.asynccontextmanager
async def _plain_pool(
    engine: GrantEngine, upstream: RecordingUpstream, *, workers: int
) -> AsyncIterator[tuple[ProxyPool, CollectorRegistry]]:
    """A started pool whose policy allows ``alpha.localhost`` on ``upstream`` (no grant),
    with its metrics registry."""
    config = make_config(policy=[endpoint("alpha.localhost", upstream.port, allowed_ips=LOOPBACK)])
    registry = CollectorRegistry()
    pool = ProxyPool(config, engine, workers=workers, events=_Events(), registry=registry)
    async with pool:
        await pool.start(tcp=("127.0.0.1", 0))
        assert pool.tcp_address is not None
        yield pool, registry


class _Events(list[dict[str, Any]]):
    def __call__(self, event: dict[str, Any]) -> None:
        self.append(event)


def _requests_by_worker(pool: ProxyPool) -> dict[int, float]:
    counts: dict[int, float] = {}
    for slot, families in pool.collector.latest().items():
        counts[slot] = sum(
            value
            for family in families
            if family["name"] == "grantbox_proxy_requests"
            for name, _labels, value in family["samples"]
            if name.endswith("_total")
        )
    return counts


async def _wait_for(predicate: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


@pytest.fixture
def no_stray_workers() -> Iterator[None]:
    yield
    strays = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit()
        and _cmdline(pid).find("grantbox.proxy.pool.worker") >= 0
        and _parent(pid) == os.getpid()
    ]
    assert strays == [], "worker processes outlived their pool"


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _parent(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


async def test_two_workers_inject_one_token_fetched_once_and_record_every_request(
    engine: GrantEngine,
    issuer: TokenEndpoint,
    tls_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
    no_stray_workers: None,
) -> None:
    events, registry = _Events(), CollectorRegistry()
    async with _tls_pool(
        engine,
        issuer,
        tls_upstream,
        upstream_ca_file,
        tmp_path,
        events=events,
        registry=registry,
        own_registries=[engine.registry],  # as proxy run and the supervisor do
    ) as running:
        pool, proxy, ca_file = running.pool, running.proxy, running.ca_file
        assert len(pool.worker_pids) == 2 and os.getpid() not in pool.worker_pids
        url = f"https://alpha.localhost:{tls_upstream.port}/v1/whoami"
        # Cold cache, eight connections at once (TLS interception in both workers).
        results = await asyncio.gather(*(curl(url, proxy=proxy, cacert=ca_file) for _ in range(8)))
        # One event and one count per CONNECT and per request inside its tunnel.
        await _wait_for(lambda: len(events) == 16)
        await _wait_for(lambda: sum(_requests_by_worker(pool).values()) == 16)
        by_worker = _requests_by_worker(pool)
        scraped = _samples(registry)
    assert [r.status for r in results] == [200] * 8, results[0].stderr
    (token,) = issuer.issued  # single-flight across the workers: one token request
    assert issuer.request_count == 1
    assert {tuple(r.header("authorization")) for r in tls_upstream.requests} == {
        (f"Bearer {token}",)
    }
    assert len(events) == 16 and {e["class_uid"] for e in events} == {4002}
    assert sum(e.get("unmapped", {}).get("injection") == "injected" for e in events) == 8
    assert all(token not in json.dumps(e) for e in events)
    assert sorted(by_worker) == [0, 1] and all(n > 0 for n in by_worker.values()), by_worker
    assert scraped['grantbox_proxy_requests_total{code="",decision="allowed"}'] == 16.0
    assert scraped['grantbox_proxy_injections_total{outcome="injected"}'] == 8.0
    assert scraped["grantbox_proxy_active_connections"] == 0.0
    # The cache counters count the eight requests, as one process's would: one token
    # request, every other request served from a cache (the engine's or a worker's) or by
    # waiting for that one request, summed over the parent and both workers.
    cache = ("hits", "misses", "coalesced_waits")
    assert sum(scraped[f"grantbox_token_cache_{c}_total"] for c in cache) == 8.0
    assert scraped["grantbox_token_cache_misses_total"] == 1.0


async def test_an_update_reaches_every_worker_and_the_cap_counts_all_of_them(
    engine: GrantEngine,
    issuer: TokenEndpoint,
    plain_upstream: RecordingUpstream,
    no_stray_workers: None,
) -> None:
    allowed = make_config(
        policy=[endpoint("alpha.localhost", plain_upstream.port, allowed_ips=LOOPBACK)]
    )
    pool = ProxyPool(allowed, engine, workers=2, events=_Events(), limits=Limits(max_connections=2))
    async with pool:
        await pool.start(tcp=("127.0.0.1", 0))
        assert pool.tcp_address is not None
        host, port = pool.tcp_address
        proxy = f"http://{host}:{port}"
        url = f"http://alpha.localhost:{plain_upstream.port}/x"
        before = await curl(url, proxy=proxy)
        # Two idle connections fill the cap, one in each worker; a third is refused.
        held = [await asyncio.open_connection(host, port) for _ in range(2)]
        await _wait_for(lambda: pool.open_connections == 2)
        refused = await curl(url, proxy=proxy)
        for _reader, writer in held:
            writer.close()
        await _wait_for(lambda: pool.open_connections == 0)
        pool.update(make_config(policy=[endpoint("other.localhost", 1)]))
        async with asyncio.timeout(10):
            await pool.settled()
        after = await curl(url, proxy=proxy)
    assert before.status == 200
    assert refused.status == 503 and refused.json()["error"] == "connection_limit_reached"
    assert after.status == 403 and after.json()["error"] == "policy_denied"


async def test_a_worker_that_dies_is_replaced_and_its_counts_are_kept(
    engine: GrantEngine,
    plain_upstream: RecordingUpstream,
    no_stray_workers: None,
) -> None:
    async with _plain_pool(engine, plain_upstream, workers=2) as (pool, registry):
        proxy = f"http://127.0.0.1:{pool.tcp_address[1]}"
        url = f"http://alpha.localhost:{plain_upstream.port}/x"
        for _ in range(4):
            assert (await curl(url, proxy=proxy)).status == 200
        await _wait_for(lambda: sum(_requests_by_worker(pool).values()) == 4)
        victim = pool.worker_pids[0]
        os.kill(victim, signal.SIGKILL)
        await _wait_for(lambda: len(pool.worker_pids) == 2 and victim not in pool.worker_pids)
        for _ in range(4):
            assert (await curl(url, proxy=proxy)).status == 200
        await _wait_for(
            lambda: (
                _samples(registry).get('grantbox_proxy_requests_total{code="",decision="allowed"}')
                == 8.0
            )
        )


async def test_with_no_worker_alive_an_agent_gets_a_clear_503_until_one_is_back(
    engine: GrantEngine,
    plain_upstream: RecordingUpstream,
    no_stray_workers: None,
) -> None:
    """Between a crash and its replacement nothing can serve: the connection is answered
    ``connection_limit_reached`` at once (never left hanging), counted, and the next
    worker serves again."""
    async with _plain_pool(engine, plain_upstream, workers=1) as (pool, registry):
        [victim] = pool.worker_pids
        os.kill(victim, signal.SIGKILL)
        await _wait_for(lambda: pool.worker_pids == [])  # replaced only after a backoff
        reader, writer = await asyncio.open_connection(*pool.tcp_address)
        target = f"alpha.localhost:{plain_upstream.port}"
        writer.write(f"GET http://{target}/x HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"connection_limit_reached" in answer
        assert _samples(registry)["grantbox_proxy_refused_connections_total"] >= 1
        await _wait_for(lambda: len(pool.worker_pids) == 1)
        proxy = f"http://127.0.0.1:{pool.tcp_address[1]}"
        assert (await curl(f"http://{target}/x", proxy=proxy)).status == 200
    assert [r.target for r in plain_upstream.requests] == ["/x"]


class _ClosedUnderneath:
    """A token source whose request is cancelled under it, as a closed engine's are."""

    def replace_bindings(self, bindings: Any) -> None:
        pass

    async def obtain(self, binding: Any) -> Any:
        raise asyncio.CancelledError


async def test_a_token_question_cancelled_in_the_parent_is_answered_not_left_waiting(
    issuer: TokenEndpoint,
    tls_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
    no_stray_workers: None,
) -> None:
    async with _tls_pool(
        _ClosedUnderneath(), issuer, tls_upstream, upstream_ca_file, tmp_path, events=_Events()
    ) as running:
        proxy, ca_file = running.proxy, running.ca_file
        url = f"https://alpha.localhost:{tls_upstream.port}/v1/whoami"
        answer = await curl(url, proxy=proxy, cacert=ca_file, timeout=10)
    assert answer.status == 502, answer.stderr
    body = answer.json()
    assert (body["error"], body["reason"]) == ("token_grant_failed", "grant_misconfigured")
    assert tls_upstream.requests == []


async def test_a_hostile_agent_through_the_workers_gets_no_token_it_should_not(
    engine: GrantEngine,
    issuer: TokenEndpoint,
    tls_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
    no_stray_workers: None,
) -> None:
    """Its own copy of the header is replaced, a host the binding does not name gets no
    token (nor a way out), and a flood of connections past the cap is refused while the
    workers keep serving."""
    events = _Events()
    async with _tls_pool(
        engine,
        issuer,
        tls_upstream,
        upstream_ca_file,
        tmp_path,
        events=events,
        limits=Limits(max_connections=6),
    ) as running:
        proxy, ca_file = running.proxy, running.ca_file
        forged = await curl(
            "-H",
            "authorization : Bearer forged",
            f"https://alpha.localhost:{tls_upstream.port}/v1/whoami",
            proxy=proxy,
            cacert=ca_file,
        )
        elsewhere = await curl(
            f"https://beta.localhost:{tls_upstream.port}/v1/whoami", proxy=proxy, cacert=ca_file
        )
        host, port = running.proxy.removeprefix("http://").split(":")
        flood = [await asyncio.open_connection(host, int(port)) for _ in range(6)]
        await _wait_for(lambda: running.pool.open_connections == 6)
        refused = await curl("http://alpha.localhost:1/", proxy=proxy)
        for _reader, writer in flood:
            writer.close()
        await _wait_for(lambda: running.pool.open_connections == 0)
        after = await curl(
            f"https://alpha.localhost:{tls_upstream.port}/v1/whoami", proxy=proxy, cacert=ca_file
        )
    (token,) = issuer.issued
    assert (forged.status, after.status) == (200, 200), forged.stderr
    assert [r.header("authorization") for r in tls_upstream.requests] == [
        [f"Bearer {token}"],
        [f"Bearer {token}"],
    ]
    assert "CONNECT tunnel failed, response 403" in elsewhere.stderr  # the tunnel is refused
    assert any(e.get("status_code") == "policy_denied" for e in events)
    assert refused.status == 503 and refused.json()["error"] == "connection_limit_reached"
    assert all("forged" not in json.dumps(e) and token not in json.dumps(e) for e in events)
