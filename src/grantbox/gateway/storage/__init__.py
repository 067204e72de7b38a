"""Durable storage of profiles, providers, sandboxes, logs and events."""

from .database import make_engine, migrate
from .models import (
    AttachmentRow,
    Base,
    EventRow,
    LogRow,
    ProfileRow,
    ProviderRow,
    SandboxRow,
    SandboxStatusRow,
)
from .store import Store

__all__ = [
    "AttachmentRow",
    "Base",
    "EventRow",
    "LogRow",
    "ProfileRow",
    "ProviderRow",
    "SandboxRow",
    "SandboxStatusRow",
    "Store",
    "make_engine",
    "migrate",
]
