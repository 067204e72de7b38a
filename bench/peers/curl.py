"""curl --parallel: the client for the TLS-interception comparison.

wrk cannot send CONNECT, so intercepted HTTPS is driven by one curl process with up to 16
transfers in flight over HTTP/1.1. curl keeps each CONNECT tunnel (and the TLS session
inside it) open and reuses it for the next URL, so this measures requests inside kept-alive
tunnels, not handshakes; ``num_connects`` in the per-transfer line shows how many tunnels
were opened. A URL glob (``?n=[1-N]``) makes the N distinct URLs without a file.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

PARALLEL = 16
_FORMAT = r"%{http_code} %{time_total} %{num_connects} %{size_download}\n"


def curl_argv(
    url: str, count: int, *, proxy: str | None, cafile: str, parallel: int = PARALLEL
) -> list[str]:
    """``count`` GETs of ``url`` (made distinct by a query glob), at most ``parallel`` at once."""
    if count < 1:
        raise ValueError("count must be at least 1")
    argv = [
        "curl",
        "--silent",
        "--no-progress-meter",
        "--http1.1",
        "--parallel",
        "--parallel-max",
        str(parallel),
        "--cacert",
        cafile,
        "--max-time",
        "10",
        "--output",
        "/dev/null",
        "--write-out",
        _FORMAT,
    ]
    if proxy:
        argv += ["--proxy", proxy]
    sep = "&" if "?" in url else "?"
    return [*argv, f"{url}{sep}n=[1-{count}]"]


@dataclass(frozen=True)
class CurlResult:
    requests: int  # transfers that answered 200 with the full body
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # transfers that failed or answered anything else
    connects: int  # new connections (tunnels) curl opened

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def parse_curl(output: str, seconds: float, *, body_size: int) -> CurlResult:
    """The per-transfer ``--write-out`` lines of one run that took ``seconds`` of wall time."""
    times: list[float] = []
    errors = 0
    connects = 0
    for line in output.splitlines():
        fields = line.split()
        if len(fields) != 4:
            continue
        code, total, new, size = fields
        connects += int(new)
        if code == "200" and int(size) == body_size:
            times.append(float(total))
        else:
            errors += 1
    if not times:
        return CurlResult(0, seconds, 0.0, 0.0, errors, connects)
    return CurlResult(
        requests=len(times),
        seconds=seconds,
        p50_ms=percentile(times, 50) * 1000,
        p99_ms=percentile(times, 99) * 1000,
        errors=errors,
        connects=connects,
    )


def percentile(values: list[float], pct: int) -> float:
    """The ``pct``-th percentile (inclusive method, so one sample is its own percentile)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]
