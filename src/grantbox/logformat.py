"""The one log format of every grantbox process: a JSON object per line.

``{"time": RFC 3339 UTC, "level", "logger", "message", ...fields}``, where the fields come
from ``log.info("...", extra={"fields": {...}})``. The gateway, the supervisor, ``proxy run``
and the identity agent all log through :func:`json_logging`, so one parser reads them all.

Secrets stay out by construction: fields whose name says credential (``authorization``,
``token``, ``client_assertion``…) are replaced, and bearer credentials and JWTs in any text
are masked, so a careless ``log.info("%s", headers)`` cannot leak a token. Exceptions are
recorded by class name only: their messages may quote what a peer sent.

It sits at the package root and imports nothing of grantbox, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

FIELDS = "fields"  # the ``extra`` key that carries structured fields
REDACTED = "[redacted]"

_SECRET_NAMES = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "proxy_authorization",
        "cookie",
        "set-cookie",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "supervisor_token",
        "operator_token",
        "client_assertion",
        "assertion",
        "svid",
        "jwt",
        "password",
        "secret",
        "client_secret",
        "private_key",
        "key_material",
    }
)
# "Bearer <token68>" (any case; DPoP too) and anything shaped like a JWS/JWT.
_BEARER = re.compile(r"(?i)\b(bearer|dpop)(\s+)[A-Za-z0-9._~+/-]{8,}=*")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?")
_RESERVED = ("time", "level", "logger", "message")


def mask(text: str) -> str:
    """``text`` with bearer credentials and JWTs replaced by ``[redacted]``."""
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _JWT.sub(REDACTED, text)


def _clean(name: str, value: Any) -> Any:
    if name.lower() in _SECRET_NAMES:
        return REDACTED
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(name, item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask(str(value))


def rfc3339(timestamp: float) -> str:
    """``2026-01-02T03:04:05.678Z``."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, secrets masked (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                if str(key) not in _RESERVED:
                    line[str(key)] = _clean(str(key), value)
        if record.exc_info and record.exc_info[0] is not None:
            line.setdefault("error", record.exc_info[0].__name__)
        return json.dumps(line, ensure_ascii=False, default=str)


def parse_line(line: str) -> dict[str, Any] | None:
    """A record written by :class:`JsonFormatter`, or None for any other line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if isinstance(record, dict) and all(key in record for key in _RESERVED):
        return record
    return None


@contextlib.contextmanager
def json_logging(
    level: str | int = logging.INFO,
    stream: TextIO | None = None,
    *,
    loggers: tuple[str, ...] = ("",),
) -> Iterator[None]:
    """JSON lines on ``stream`` (stderr) for ``loggers`` (all, through the root logger) while
    the block runs, then as before.

    A non-root logger named here stops propagating, so the root's handlers do not print the
    same record a second time in another format.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    resolved = level.upper() if isinstance(level, str) else level
    saved = []
    for name in loggers:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.level, logger.propagate))
        logger.handlers[:] = [handler]
        logger.setLevel(resolved)
        logger.propagate = not name
    try:
        yield
    finally:
        for logger, handlers, previous, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(previous)
            logger.propagate = propagate
