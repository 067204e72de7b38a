"""What a pool's parent and its workers say to each other, as plain data.

Every message is one frame: a 4-byte big-endian length and a JSON object with a ``t``
(type). The parent sends ``hello`` (everything a worker needs to start), ``update`` (a new
effective config), ``token`` answers and ``stop``; a worker sends ``ready``, ``token``
requests, ``closed`` (connections that ended), ``metrics`` (a snapshot) and ``log``
records. Connections themselves go over a separate datagram socket as descriptors, and
OCSF events over a third stream (see :mod:`.parent`).

The effective config crosses with its stored-credential values: they are the sandbox's
secrets, sent only over a socketpair to a child of the same process.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import orjson

from grantbox.grants import GrantError, error_for_reason
from grantbox.profiles import EffectiveConfig, StaticSecrets

from ..limits import Limits

HEADER = struct.Struct(">I")
# Largest frame either side accepts: a config with thousands of bindings fits many times.
MAX_FRAME = 64 * 1024 * 1024


class WireError(ValueError):
    """A frame the other side should never have sent: the channel is closed."""


def frame(message: Mapping[str, Any]) -> bytes:
    body = orjson.dumps(message)
    if len(body) > MAX_FRAME:
        raise WireError(f"message of {len(body)} bytes is larger than {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise WireError(f"frame of {length} bytes announced (at most {MAX_FRAME})")
    return int(length)


def parse(body: bytes) -> dict[str, Any]:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise WireError("not a message object with a type")
    return message


def config_to_wire(config: EffectiveConfig) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "secrets": {
            "values": dict(config.secrets.values),
            "placeholders": dict(config.secrets.placeholders),
        },
    }


def config_from_wire(data: Mapping[str, Any]) -> EffectiveConfig:
    secrets = data.get("secrets") or {}
    config = EffectiveConfig.from_dict(data["config"])
    return config.with_secrets(
        StaticSecrets(dict(secrets.get("values", {})), dict(secrets.get("placeholders", {})))
    )


def limits_to_wire(limits: Limits) -> dict[str, Any]:
    return asdict(limits)


def limits_from_wire(data: Mapping[str, Any]) -> Limits:
    return Limits(**data)


def error_to_wire(error: GrantError) -> dict[str, Any]:
    return {
        "reason": str(error.reason),
        "detail": error.detail,
        "status": error.status,
        "retry_after": error.retry_after,
    }


def error_from_wire(data: Mapping[str, Any]) -> GrantError:
    """The same error class and detail; an unknown reason fails closed as an endpoint
    error."""
    error = error_for_reason(str(data.get("reason", "")), str(data.get("detail", "")))
    status, retry_after = data.get("status"), data.get("retry_after")
    error.status = status if isinstance(status, int) else None
    error.retry_after = float(retry_after) if isinstance(retry_after, int | float) else None
    return error
