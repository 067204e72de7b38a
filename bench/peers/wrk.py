"""wrk: the HTTP load generator for the plain-HTTP comparison.

wrk speaks only origin-form requests to the host it connects to, so going through a
forward proxy takes a small Lua script: wrk connects to the proxy and sends the absolute
URI with the origin's ``Host``. The same script's ``done`` hook prints one JSON line with
the figures, so nothing depends on wrk's human-readable layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MARK = "BENCH-WRK "
CONNECTIONS = 16
THREADS = 2

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-WRK {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%.1f,"p99_us":%.1f,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def lua_script(request_target: str, host: str | None = None) -> str:
    """The script for one run: ``request_target`` is the path for a server, or the absolute
    URI for a proxy (then ``host`` is the origin's ``Host``)."""
    if '"' in request_target or "\\" in request_target or (host and ('"' in host or "\\" in host)):
        raise ValueError("request target and host must not contain quotes or backslashes")
    lines = [f'wrk.path = "{request_target}"']
    if host:
        lines.append(f'wrk.headers["Host"] = "{host}"')
    return "\n".join(lines) + _DONE


def wrk_argv(
    target: str,
    script: str,
    seconds: float,
    *,
    connections: int = CONNECTIONS,
    threads: int = THREADS,
) -> list[str]:
    """Keep-alive load for a fixed time; ``--timeout`` bounds any single request."""
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        script,
        target,
    ]


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # connect, write and timeout errors, and answers other than 2xx/3xx
    closed: int  # connections the server closed (wrk counts them as read errors, reconnects)
    bytes: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


class WrkOutputError(ValueError):
    """wrk printed no result line; the message carries the tail of what it did print."""


def parse_wrk(output: str) -> WrkResult:
    """The figures from the ``done`` hook's line in wrk's output."""
    for line in output.splitlines():
        if line.startswith(MARK):
            data = json.loads(line[len(MARK) :])
            errors = sum(int(data[k]) for k in ("connect", "write", "status", "timeout"))
            return WrkResult(
                requests=int(data["requests"]),
                seconds=int(data["duration_us"]) / 1e6,
                p50_ms=float(data["p50_us"]) / 1000,
                p99_ms=float(data["p99_us"]) / 1000,
                errors=errors,
                closed=int(data["read"]),
                bytes=int(data["bytes"]),
            )
    tail = " | ".join(output.strip().splitlines()[-5:])
    raise WrkOutputError(f"wrk printed no result: {tail or 'no output'}")
