"""The measuring itself: routes alternated in rounds, each run bounded in time.

Every route gets one short warm-up run (the grant engine's first token, connection pools,
mitmproxy's certificate), then ``rounds`` measured runs; the order is reversed every other
round so no route always runs right after the same neighbour. A route that fails is
dropped from later rounds and reported with its reason; the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import configs
from .curl import CurlResult, curl_argv, parse_curl
from .install import program
from .processes import ServiceFailed, run_tool
from .stack import Route
from .stats import Sample
from .wrk import WrkOutputError, parse_wrk

Say = Callable[[str], None]
WARMUP_SECONDS = 1.0
TLS_WARMUP_REQUESTS = 300
TLS_MIN_REQUESTS = 300
TLS_MAX_REQUESTS = 200_000


@dataclass
class Section:
    """Samples per route, what the tools counted (warm-ups included), and failures."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    counted: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    # per route: connections the proxy closed (wrk), or tunnels curl opened (TLS)
    extra: dict[str, int] = field(default_factory=dict)
    # per route and part: CPU seconds its proxy's processes used in the measured runs
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)

    def add_cpu(self, key: str, before: dict[str, float], after: dict[str, float]) -> None:
        parts = self.cpu.setdefault(key, {})
        for part, used in after.items():
            parts[part] = parts.get(part, 0.0) + used - before.get(part, used)

    def add(self, key: str, sample: Sample, *, measured: bool = True) -> None:
        self.counted[key] = self.counted.get(key, 0) + sample.requests
        if measured:
            self.samples.setdefault(key, []).append(sample)


def _order(routes: Sequence[Route], round_index: int) -> list[Route]:
    return list(routes) if round_index % 2 == 0 else list(reversed(routes))


def _check(route: Route, sample: Sample) -> None:
    if sample.requests == 0 or sample.errors:
        raise ServiceFailed(
            f"{sample.errors} errors and {sample.requests} answered requests on {route.url}"
        )


def http_rounds(routes: Sequence[Route], rounds: int, seconds: float, say: Say) -> Section:
    """wrk, 16 keep-alive connections, ``seconds`` per run."""
    section = Section()
    live = [route for route in routes if route.run_wrk is not None]

    def run(route: Route, duration: float, measured: bool) -> None:
        assert route.run_wrk is not None
        try:
            before = route.cpu_seconds()
            sample = parse_wrk(route.run_wrk(route.wrk_script(), duration))
            after = route.cpu_seconds()
            _check(route, sample)
        except (ServiceFailed, WrkOutputError) as exc:
            section.failed[route.key] = str(exc)
            say(f"  {route.label}: failed, dropped from the comparison: {exc}")
            live.remove(route)
            return
        section.add(route.key, sample, measured=measured)
        if measured:
            section.add_cpu(route.key, before, after)
            section.extra[route.key] = section.extra.get(route.key, 0) + sample.closed
            say(
                f"  {route.label:34} {sample.requests / sample.seconds:9.0f} req/s"
                f"  p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms"
            )

    say("warm-up (not measured)")
    for route in list(live):
        run(route, WARMUP_SECONDS, measured=False)
    for index in range(rounds):
        say(f"round {index + 1}/{rounds}")
        for route in _order(list(live), index):
            run(route, seconds, measured=True)
    return section


def _curl(route: Route, count: int, seconds: float) -> CurlResult:
    """``count`` requests; bounded at several times the run's intended length."""
    assert route.cafile is not None
    argv = curl_argv(route.url, count, proxy=route.proxy, cafile=str(route.cafile))
    argv[0] = program("curl")
    started = time.perf_counter()
    output = run_tool(argv, timeout=60 + 6 * seconds)
    return parse_curl(output, time.perf_counter() - started, body_size=configs.BODY_SIZE)


def tls_rounds(routes: Sequence[Route], rounds: int, seconds: float, say: Say) -> Section:
    """curl --parallel through each interceptor; each run's request count is sized from
    the route's previous rate so it lasts about ``seconds``."""
    section = Section()
    live = list(routes)
    counts: dict[str, int] = {}

    def size(route: Route, sample: CurlResult) -> None:
        wanted = int(sample.rate * seconds)
        counts[route.key] = max(TLS_MIN_REQUESTS, min(TLS_MAX_REQUESTS, wanted))

    def run(route: Route, count: int, measured: bool) -> None:
        try:
            before = route.cpu_seconds()
            sample = _curl(route, count, seconds)
            after = route.cpu_seconds()
            _check(route, sample)
        except ServiceFailed as exc:
            section.failed[route.key] = str(exc)
            say(f"  {route.label}: failed, dropped from the comparison: {exc}")
            live.remove(route)
            return
        section.add(route.key, sample, measured=measured)
        size(route, sample)
        if measured:
            section.add_cpu(route.key, before, after)
            section.extra[route.key] = section.extra.get(route.key, 0) + sample.connects
            say(
                f"  {route.label:34} {sample.rate:9.0f} req/s"
                f"  p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms"
                f"  ({sample.requests} requests, {sample.connects} tunnels)"
            )

    say("warm-up (not measured; sizes each route's runs)")
    for route in list(live):
        run(route, TLS_WARMUP_REQUESTS, measured=False)
    for index in range(rounds):
        say(f"round {index + 1}/{rounds}")
        for route in _order(list(live), index):
            run(route, counts[route.key], measured=True)
    return section
