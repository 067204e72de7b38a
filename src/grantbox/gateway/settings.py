"""Where the gateway keeps its state and how it listens, read from ``GRANTBOX_*`` variables.

One pydantic-settings model: each field ``name`` comes from ``GRANTBOX_<NAME>`` unless the
command line passes it (``--db``, ``--listen``, ``--state-dir``…), so tests and ``grantbox
up`` runs are hermetic and never touch the real user directories. A bad value stops start-up
with one line naming the variable; values are never echoed (a database URL may hold a
password).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from grantbox.drivers.invocation import MAX_PROXY_WORKERS
from grantbox.settings import ENV_PREFIX, settings_problem

from .agent_ids import UidRange, parse_uid_range

APP_NAME = "grantbox"
DEFAULT_LISTEN = "127.0.0.1:7443"
DEFAULT_AUDIENCE = "grantbox-gateway"

OPERATOR_TOKEN_FILE = "operator-token"  # noqa: S105 (a file name)
GATEWAY_FILE = "gateway.json"
SIGNING_KEY_FILE = "supervisor-signing-key.pem"
CREDENTIALS_KEY_FILE = "credentials.key"
DATABASE_FILE = "gateway.db"


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


class StateDirectories(BaseSettings):
    """The directories every grantbox command on this machine agrees on (the runtime
    directory, where sockets live, has no single default: ``grantbox up`` picks one)."""

    # An empty variable means unset, as it did before these were parsed by a model.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True)

    state_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir(APP_NAME)))
    config_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_config_dir(APP_NAME)))
    runtime_dir: Path | None = None

    @field_validator("state_dir", "config_dir", "runtime_dir")
    @classmethod
    def _not_empty(cls, value: Path | None) -> Path | None:
        if value is not None and str(value) in ("", "."):
            raise ValueError("must name a directory")
        return value


def _directories() -> StateDirectories:
    try:
        return StateDirectories()
    except ValidationError as exc:
        raise ValueError(settings_problem(exc)) from None


def default_state_dir() -> Path:
    """The user's data directory for grantbox, or ``$GRANTBOX_STATE_DIR``."""
    return _directories().state_dir


def default_config_dir() -> Path:
    """The user's config directory for grantbox, or ``$GRANTBOX_CONFIG_DIR``."""
    return _directories().config_dir


def runtime_dir_override() -> Path | None:
    """``$GRANTBOX_RUNTIME_DIR`` when set."""
    return _directories().runtime_dir


class GatewaySettings(StateDirectories):
    """Everything ``create_app`` needs; build with :meth:`from_env` or directly in tests."""

    db_url: str = Field(default="", repr=False)  # may carry a database password
    listen: str = DEFAULT_LISTEN
    token_audience: str = Field(default=DEFAULT_AUDIENCE, min_length=1)
    supervisor_token_ttl: int = Field(default=900, ge=60, le=86400)
    heartbeat_stale_after: float = Field(default=30.0, gt=0)
    longpoll_max: float = Field(default=60.0, gt=0)
    builtin_profiles_dir: Path | None = None
    # The URL supervisors should dial when it differs from the listen address (NAT, pods).
    advertise_url: str = ""
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    # Kernel uids handed to sandbox agents, one each (see grantbox.gateway.agent_ids);
    # GRANTBOX_AGENT_UIDS / --agent-uids as FIRST:COUNT.
    agent_uids: Annotated[UidRange, NoDecode] = Field(default_factory=UidRange)
    # Processes serving each sandbox's egress proxy (the local driver's supervisors);
    # GRANTBOX_PROXY_WORKERS / grantbox up --proxy-workers.
    proxy_workers: int = Field(default=1, ge=1, le=MAX_PROXY_WORKERS)

    @field_validator("agent_uids", mode="before")
    @classmethod
    def _agent_uid_range(cls, value: object) -> object:
        return parse_uid_range(value) if isinstance(value, str) else value

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("advertise_url")
    @classmethod
    def _advertised(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @classmethod
    def from_env(cls, **overrides: Any) -> GatewaySettings:
        """The environment's settings, with the command line's values (those not None) on top.

        Raises ``ValueError`` with one line naming the bad variable.
        """
        given = {key: value for key, value in overrides.items() if value not in (None, "")}
        try:
            return cls(**given)
        except ValidationError as exc:
            raise ValueError(settings_problem(exc)) from None

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
