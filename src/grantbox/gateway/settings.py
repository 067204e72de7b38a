"""Where the gateway keeps its state and how it listens.

Every path can be moved by environment (``GRANTBOX_STATE_DIR``, ``GRANTBOX_CONFIG_DIR``) so
tests and ``grantbox up`` runs are hermetic and never touch the real user directories.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from .agent_ids import UidRange, parse_uid_range

APP_NAME = "grantbox"
DEFAULT_LISTEN = "127.0.0.1:7443"
DEFAULT_AUDIENCE = "grantbox-gateway"

OPERATOR_TOKEN_FILE = "operator-token"  # noqa: S105 (a file name)
GATEWAY_FILE = "gateway.json"
SIGNING_KEY_FILE = "supervisor-signing-key.pem"
CREDENTIALS_KEY_FILE = "credentials.key"
DATABASE_FILE = "gateway.db"


def default_state_dir() -> Path:
    """The user's data directory for grantbox, or ``$GRANTBOX_STATE_DIR``."""
    override = os.environ.get("GRANTBOX_STATE_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME))


def default_config_dir() -> Path:
    """The user's config directory for grantbox, or ``$GRANTBOX_CONFIG_DIR``."""
    override = os.environ.get("GRANTBOX_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME))


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → ``(host, port)``; port 0 picks a free one."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"listen address {value!r} must be HOST:PORT")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"listen port {port} is outside 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything ``create_app`` needs; build with :meth:`from_env` or directly in tests."""

    state_dir: Path
    config_dir: Path
    db_url: str = field(default="", repr=False)  # may carry a database password
    listen: str = DEFAULT_LISTEN
    token_audience: str = DEFAULT_AUDIENCE
    supervisor_token_ttl: int = 900
    heartbeat_stale_after: float = 30.0
    longpoll_max: float = 60.0
    builtin_profiles_dir: Path | None = field(default=None)
    # The URL supervisors should dial when it differs from the listen address (NAT, pods).
    advertise_url: str = ""
    max_body_bytes: int = 4 * 1024 * 1024
    # Kernel uids handed to sandbox agents, one each (see grantbox.gateway.agent_ids).
    agent_uids: UidRange = field(default_factory=UidRange)

    @classmethod
    def from_env(
        cls,
        *,
        db_url: str | None = None,
        listen: str | None = None,
        state_dir: Path | None = None,
        config_dir: Path | None = None,
        advertise_url: str | None = None,
        agent_uids: str | None = None,
    ) -> GatewaySettings:
        """Raises ValueError for an agent uid range that is not ``FIRST:COUNT``."""
        uid_text = agent_uids or os.environ.get("GRANTBOX_AGENT_UIDS", "")
        return cls(
            state_dir=state_dir or default_state_dir(),
            config_dir=config_dir or default_config_dir(),
            db_url=db_url or "",
            listen=listen or DEFAULT_LISTEN,
            advertise_url=advertise_url or "",
            agent_uids=parse_uid_range(uid_text) if uid_text else UidRange(),
        )

    @property
    def database_url(self) -> str:
        """The configured URL, or SQLite in the state directory."""
        return self.db_url or f"sqlite:///{self.state_dir / DATABASE_FILE}"

    @property
    def operator_token_path(self) -> Path:
        return self.config_dir / OPERATOR_TOKEN_FILE

    @property
    def gateway_file_path(self) -> Path:
        return self.config_dir / GATEWAY_FILE

    @property
    def signing_key_path(self) -> Path:
        return self.state_dir / SIGNING_KEY_FILE

    @property
    def credentials_key_path(self) -> Path:
        return self.state_dir / CREDENTIALS_KEY_FILE
