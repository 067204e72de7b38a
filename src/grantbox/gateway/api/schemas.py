"""Request bodies of the HTTP API (responses are plain JSON documented by example)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from grantbox.gateway.sandbox_metrics import Snapshot, read_snapshot


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProfileDocuments(_Body):
    documents: list[dict[str, Any]] = Field(max_length=200)


class ProfileUpdate(_Body):
    document: dict[str, Any]


class ProviderCreate(_Body):
    name: str = Field(max_length=253)
    type: str = Field(max_length=253)
    runtime_credentials: bool = False
    credentials: dict[str, str] = Field(default_factory=dict)


class ProviderUpdate(_Body):
    resource_version: int
    type: str | None = Field(default=None, max_length=253)
    runtime_credentials: bool | None = None
    credentials: dict[str, str] | None = None


class SandboxCreate(_Body):
    name: str = Field(max_length=253)
    providers: list[str] = Field(default_factory=list, max_length=64)
    policy: dict[str, Any] | None = None
    command: list[str] = Field(default_factory=list)


class AttachProvider(_Body):
    provider: str = Field(max_length=253)
    resource_version: int | None = None


class ExecCreate(_Body):
    command: list[str] = Field(min_length=1, max_length=256)
    timeout_seconds: float = Field(default=300.0, gt=0, le=86_400)
    pickup_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    stdin: bool = Field(default=False, description="the operator will send input")
    tty: bool = Field(default=False, description="run the command on a terminal")
    rows: int = Field(default=0, ge=0, le=1000)
    cols: int = Field(default=0, ge=0, le=1000)


class ExecInput(_Body):
    data: str = Field(default="", max_length=1_048_576, description="base64 of the bytes")
    eof: bool = False


class ExecResize(_Body):
    rows: int = Field(ge=1, le=1000)
    cols: int = Field(ge=1, le=1000)


class SandboxExit(_Body):
    exit_code: int = Field(ge=-255, le=255)
    reason: str = Field(default="", max_length=4000)


class ConditionReport(_Body):
    """One sandbox condition as the supervisor sees it (the gateway stamps ``since``)."""

    type: str = Field(pattern=r"^[A-Z][A-Za-z0-9]{0,63}$")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", pattern=r"^([A-Z][A-Za-z0-9]{0,63})?$")
    message: str = Field(default="", max_length=1000)


class Heartbeat(_Body):
    applied_revision: str = Field(default="", max_length=200)
    error: str = Field(default="", max_length=4000)
    conditions: list[ConditionReport] = Field(default_factory=list, max_length=8)
    # The supervisor's metrics snapshot (absent from older supervisors); checked by
    # grantbox.gateway.sandbox_metrics.read_snapshot, which keeps the result in ``_snapshot``.
    metrics: list[Any] | None = None
    _snapshot: Snapshot | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _read_metrics(self) -> Heartbeat:
        if self.metrics is not None:
            self._snapshot = read_snapshot(self.metrics)
        return self

    @property
    def snapshot(self) -> Snapshot | None:
        """The metrics snapshot as read, or None when the heartbeat carried none."""
        return self._snapshot

    @field_validator("conditions")
    @classmethod
    def _one_per_type(cls, value: list[ConditionReport]) -> list[ConditionReport]:
        if len({c.type for c in value}) != len(value):
            raise ValueError("each condition type may appear once")
        return value


class LogLine(_Body):
    ts: float | None = None
    stream: str = Field(default="supervisor", max_length=32)
    message: str = Field(default="", max_length=65536)
    truncated: bool = Field(default=False, description="the supervisor cut the line")


class LogBatch(_Body):
    lines: list[LogLine] = Field(max_length=1000)


class EventBatch(_Body):
    events: list[dict[str, Any]] = Field(max_length=1000)


class ExecOutput(_Body):
    stream: Literal["stdout", "stderr"]
    data: str = Field(max_length=1_048_576, description="base64 of the bytes")


class ExecExit(_Body):
    exit_code: int = Field(ge=-255, le=255)
