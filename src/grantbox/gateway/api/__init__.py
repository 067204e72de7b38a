"""The HTTP API: operator routes, the supervisor allowlist, health and metrics."""

from .app import create_app
from .state import Gateway, gateway_of

__all__ = ["Gateway", "create_app", "gateway_of"]
