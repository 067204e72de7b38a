"""Durable storage of profiles, providers, sandboxes, logs and events."""

from .database import make_engine, migrate
from .event_log import append_batch, read_page
from .models import (
    AttachmentRow,
    Base,
    EventBatchRow,
    EventTextRow,
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
    "EventBatchRow",
    "EventTextRow",
    "LogRow",
    "ProfileRow",
    "ProviderRow",
    "SandboxRow",
    "SandboxStatusRow",
    "Store",
    "append_batch",
    "make_engine",
    "migrate",
    "read_page",
]
