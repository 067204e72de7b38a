"""Driving the compute driver around committed sandbox records.

A sandbox record is committed before the driver is asked to start it, and removed only
after the driver confirmed the delete, so a crash in between leaves a visible record in
``error`` or ``deleting`` rather than an invisible running supervisor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from grantbox.drivers.protocol import (
    ComputeDriver,
    DriverState,
    DriverStatus,
    Reconciling,
    RequestedLimits,
    SandboxRefused,
    SandboxSpec,
    sandbox_spiffe_path,
)
from grantbox.gateway.auth import SupervisorTokenIssuer
from grantbox.gateway.errors import InvalidRequest, Unavailable
from grantbox.gateway.exec_relay import ExecRelay
from grantbox.profiles import LimitsPolicy

from .sandboxes import SandboxService, SandboxView

log = logging.getLogger("grantbox.gateway.sandboxes")

RECONCILE_INTERVAL = 30.0


def requested_limits(policy: Mapping[str, Any]) -> RequestedLimits:
    """The stored policy's ``limits`` for the driver (validated when the policy was)."""
    limits = LimitsPolicy.model_validate(policy.get("limits") or {})
    return RequestedLimits(limits.processes, limits.memory_mib, limits.cpus)


class SandboxOrchestrator:
    def __init__(
        self,
        sandboxes: SandboxService,
        issuer: SupervisorTokenIssuer,
        driver: ComputeDriver | None,
        relay: ExecRelay,
    ) -> None:
        self.sandboxes = sandboxes
        self.issuer = issuer
        self.driver = driver
        self.relay = relay
        self.gateway_url = ""

    def _require_driver(self) -> ComputeDriver:
        if self.driver is None:
            raise Unavailable(
                "no compute driver is configured; run `grantbox up`, or serve the gateway "
                "with a driver"
            )
        return self.driver

    async def create(
        self,
        name: str,
        providers: Sequence[str],
        policy: Mapping[str, Any] | None,
        command: Sequence[str],
    ) -> SandboxView:
        driver = self._require_driver()
        view = await anyio.to_thread.run_sync(
            self.sandboxes.create, name, providers, policy, command
        )
        spec = SandboxSpec(
            sandbox_id=view.id,
            name=view.name,
            command=view.command,
            gateway_url=self.gateway_url,
            supervisor_token=self.issuer.mint(view.id),
            spiffe_path=sandbox_spiffe_path(view.id),
            labels={"grantbox.dev/sandbox": view.name, "grantbox.dev/sandbox-id": view.id},
            limits=requested_limits(view.policy),
        )
        try:
            await driver.create(spec)
        except SandboxRefused as exc:
            # Nothing started: the request must change, so it leaves no record behind.
            await anyio.to_thread.run_sync(self.sandboxes.remove, view.id)
            raise InvalidRequest(f"sandbox '{view.name}' refused: {exc}") from None
        except Exception as exc:
            log.warning("driver could not create sandbox %s: %s", view.name, exc)
            failed = DriverStatus(DriverState.FAILED, f"driver could not start it: {exc}")
            await anyio.to_thread.run_sync(self.sandboxes.record_driver_status, view.id, failed)
        return await anyio.to_thread.run_sync(self.sandboxes.get_by_id, view.id)

    async def delete(self, name: str) -> None:
        sandbox_id = await anyio.to_thread.run_sync(self.sandboxes.mark_deleting, name)
        self.relay.fail_sandbox(sandbox_id, "the sandbox is being deleted")
        if self.driver is not None:
            try:
                await self.driver.delete(sandbox_id)
            except Exception as exc:
                status = DriverStatus(DriverState.FAILED, f"driver could not delete it: {exc}")
                await anyio.to_thread.run_sync(
                    self.sandboxes.record_driver_status, sandbox_id, status
                )
                raise Unavailable(
                    f"sandbox '{name}' is marked deleting but the driver failed: {exc}; "
                    "run delete again"
                ) from None
        await anyio.to_thread.run_sync(self.sandboxes.remove, sandbox_id)

    async def follow_driver(self) -> None:
        """Record every status the driver reports (runs for the server's lifetime)."""
        if self.driver is None:
            return
        async for sandbox_id, status in self.driver.watch():
            try:
                await anyio.to_thread.run_sync(
                    self.sandboxes.record_driver_status, sandbox_id, status
                )
            except Exception:
                log.exception("could not record driver status for %s", sandbox_id)

    async def reconcile_driver(self, interval: float = RECONCILE_INTERVAL) -> None:
        """Have a driver whose sandboxes outlive this process (pods) remove those this
        gateway no longer knows: at start, then every ``interval`` seconds (runs for the
        server's lifetime)."""
        driver = self.driver
        if not isinstance(driver, Reconciling):
            return

        async def known() -> set[str]:
            return set(await anyio.to_thread.run_sync(self.sandboxes.live_ids))

        while True:
            try:
                await driver.reconcile(known)
            except Exception as exc:
                log.warning("could not reconcile the driver's sandboxes: %s", exc)
            await anyio.sleep(interval)
