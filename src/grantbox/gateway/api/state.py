"""The objects one gateway app holds, reachable from a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from grantbox.gateway.auth import OperatorToken, SupervisorTokenIssuer
from grantbox.gateway.catalog import Catalog
from grantbox.gateway.changes import ChangeFeed
from grantbox.gateway.exec_relay import ExecRelay
from grantbox.gateway.sandbox_metrics import SandboxMetrics
from grantbox.gateway.services import (
    ProfileService,
    ProviderService,
    SandboxOrchestrator,
    SandboxService,
)
from grantbox.gateway.settings import GatewaySettings
from grantbox.gateway.storage import Store

from .observability import Metrics


@dataclass(slots=True)
class Gateway:
    settings: GatewaySettings
    store: Store
    catalog: Catalog
    feed: ChangeFeed
    relay: ExecRelay
    operator_token: OperatorToken
    issuer: SupervisorTokenIssuer
    profiles: ProfileService
    providers: ProviderService
    sandboxes: SandboxService
    orchestrator: SandboxOrchestrator
    metrics: Metrics
    sandbox_metrics: SandboxMetrics
    # What the process embedding the gateway says about its other parts (``grantbox up``:
    # the identity agent), shown by ``GET /api/v1/status``.
    status_extra: dict[str, Any] = field(default_factory=dict)


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway
