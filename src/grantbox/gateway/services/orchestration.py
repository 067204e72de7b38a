"""Driving the compute driver around committed sandbox records.

A sandbox record is committed before the driver is asked to start it, and removed only
after the driver confirmed the delete, so a crash in between leaves a visible record in
``error`` or ``deleting`` rather than an invisible running supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self.driver_name = ""
        # Sandboxes being restarted: a late "exited" from the previous supervisor must not
        # land on the new run. Cleared by the first pending/running status after the restart.
        self._restarting: set[str] = set()
        self._resuming: asyncio.Task[int] | None = None
        self._quiet = False

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
        await self._start(driver, view, new=True)
        return await anyio.to_thread.run_sync(self.sandboxes.get_by_id, view.id)

    def _spec(self, view: SandboxView) -> SandboxSpec:
        return SandboxSpec(
            sandbox_id=view.id,
            name=view.name,
            command=view.command,
            gateway_url=self.gateway_url,
            supervisor_token=self.issuer.mint(view.id),
            spiffe_path=sandbox_spiffe_path(view.id),
            labels={"grantbox.dev/sandbox": view.name, "grantbox.dev/sandbox-id": view.id},
            limits=requested_limits(view.policy),
        )

    async def _start(self, driver: ComputeDriver, view: SandboxView, *, new: bool = False) -> None:
        """Have the driver start the sandbox; a failure shows in its status, except that a
        new sandbox the driver refuses as asked (above a ceiling) is refused and forgotten."""
        try:
            await driver.create(self._spec(view))
        except Exception as exc:
            if new and isinstance(exc, SandboxRefused):
                # Nothing started: the request must change, so it leaves no record behind.
                await anyio.to_thread.run_sync(self.sandboxes.remove, view.id)
                raise InvalidRequest(f"sandbox '{view.name}' refused: {exc}") from None
            self._restarting.discard(view.id)
            log.warning("driver could not start sandbox %s: %s", view.name, exc)
            failed = DriverStatus(DriverState.FAILED, f"driver could not start it: {exc}")
            await anyio.to_thread.run_sync(self.sandboxes.record_driver_status, view.id, failed)

    async def restart(self, name: str) -> SandboxView:
        """Stop whatever still runs of the sandbox and start it again with a fresh token."""
        driver = self._require_driver()
        sandbox_id = await anyio.to_thread.run_sync(self.sandboxes.id_of, name)
        self._restarting.add(sandbox_id)
        self.relay.fail_sandbox(sandbox_id, "the sandbox is restarting")
        try:
            await driver.delete(sandbox_id)
        except Exception as exc:
            self._restarting.discard(sandbox_id)
            raise Unavailable(
                f"sandbox '{name}' could not be stopped for the restart: {exc}; try again"
            ) from None
        view = await anyio.to_thread.run_sync(self.sandboxes.restarting, name)
        await self._start(driver, view)
        return await anyio.to_thread.run_sync(self.sandboxes.get_by_id, sandbox_id)

    def start_resuming(self) -> asyncio.Task[int]:
        """Run :meth:`resume_all` in the background (on the serving loop)."""
        self._resuming = asyncio.get_running_loop().create_task(self.resume_all())
        return self._resuming

    async def quiesce(self) -> None:
        """Start nothing more and let a start in flight finish, so that stopping the driver
        afterwards stops everything (``grantbox up`` calls this before it stops sandboxes)."""
        self._quiet = True
        if self._resuming is not None and not self._resuming.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._resuming)

    async def resume_all(self) -> int:
        """After the control plane itself restarted (``grantbox up``), start every sandbox
        that was running again and finish deletes that were interrupted."""
        if self.driver is None:
            return 0
        for sandbox_id in await anyio.to_thread.run_sync(self.sandboxes.deleting_ids):
            with contextlib.suppress(Exception):
                await self.driver.delete(sandbox_id)
                await anyio.to_thread.run_sync(self.sandboxes.remove, sandbox_id)
        views = await anyio.to_thread.run_sync(self.sandboxes.to_resume)
        for view in views:
            if self._quiet:
                break
            try:
                await self.restart(view.name)
            except Exception as exc:
                log.warning("could not restart sandbox %s: %s", view.name, exc)
        return len(views)

    async def delete(self, name: str) -> None:
        sandbox_id = await anyio.to_thread.run_sync(self.sandboxes.mark_deleting, name)
        self.relay.fail_sandbox(sandbox_id, "the sandbox is being deleted")
        self._restarting.discard(sandbox_id)
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
            if sandbox_id in self._restarting:
                if status.state not in (DriverState.PENDING, DriverState.RUNNING):
                    continue  # the previous run ending, reported late
                self._restarting.discard(sandbox_id)
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
