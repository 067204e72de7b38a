"""The request the demo makes from inside the sandbox: ``curl`` writing the body and then,
on a line of its own, the HTTP status, so one exec gives both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

STATUS_MARKER = "\n--grantbox-demo-status:"


@dataclass(frozen=True)
class HttpProbe:
    """What curl saw: ``status`` 0 when no HTTP answer arrived (curl failed)."""

    status: int
    body: str


def curl_argv(url: str, timeout: float = 10.0, headers: Sequence[str] = ()) -> list[str]:
    """curl without retries or redirects; the sandbox's proxy variables apply as usual."""
    extra = [arg for header in headers for arg in ("--header", header)]
    return [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        f"{timeout:g}",
        "--write-out",
        STATUS_MARKER + "%{http_code}",
        *extra,
        url,
    ]


def parse_curl_output(stdout: str) -> HttpProbe:
    """Split curl's output into body and status (the last marker wins: a body could hold one)."""
    body, marker, status_text = stdout.rpartition(STATUS_MARKER)
    if not marker:
        return HttpProbe(0, stdout)
    status_text = status_text.strip()
    status = int(status_text) if status_text.isdigit() else 0
    return HttpProbe(status, body)
