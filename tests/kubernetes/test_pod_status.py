"""Pod → driver state: the table the gateway's sandbox phases are derived from."""

from __future__ import annotations

import time
from typing import Any

import pytest

from grantbox.drivers import DriverState, DriverStatus
from grantbox.drivers.kubernetes import pod_status, sandbox_id_of
from grantbox.gateway import Phase
from grantbox.gateway.phase import SandboxFacts, derive_phase


def pod(phase: str, state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "p"}, "status": {"phase": phase, **status}}
    if state is not None:
        body["status"]["containerStatuses"] = [{"name": "supervisor", "state": state}]
    return body


def terminated(code: int, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": reason, "message": message}}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message}}


CASES: list[tuple[dict[str, Any], DriverStatus]] = [
    (pod("Pending"), DriverStatus(DriverState.PENDING, "pod is pending")),
    (
        pod("Pending", waiting("ContainerCreating")),
        DriverStatus(DriverState.PENDING, "ContainerCreating"),
    ),
    (
        pod("Pending", waiting("ImagePullBackOff", "Back-off pulling image")),
        DriverStatus(DriverState.PENDING, "ImagePullBackOff: Back-off pulling image"),
    ),
    (
        pod("Pending", waiting("InvalidImageName", "bad ref")),
        DriverStatus(DriverState.FAILED, "InvalidImageName: bad ref"),
    ),
    (
        pod("Pending", waiting("CreateContainerConfigError", 'secret "x" not found')),
        DriverStatus(DriverState.FAILED, 'CreateContainerConfigError: secret "x" not found'),
    ),
    (
        pod(
            "Pending",
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available",
                }
            ],
        ),
        DriverStatus(DriverState.PENDING, "Unschedulable: 0/3 nodes are available"),
    ),
    (pod("Running", {"running": {}}), DriverStatus(DriverState.RUNNING, "")),
    (pod("Running"), DriverStatus(DriverState.RUNNING, "")),
    (
        pod("Running", terminated(1, "Error")),
        DriverStatus(DriverState.FAILED, "supervisor exited with code 1 (Error)"),
    ),
    (
        pod("Succeeded", terminated(0, "Completed")),
        DriverStatus(DriverState.EXITED, "supervisor exited with code 0 (Completed)"),
    ),
    (pod("Succeeded"), DriverStatus(DriverState.EXITED, "supervisor exited with code 0")),
    (
        pod("Failed", terminated(137, "OOMKilled")),
        DriverStatus(DriverState.FAILED, "supervisor exited with code 137 (OOMKilled)"),
    ),
    (
        pod("Failed", terminated(2, "Error", "error: cannot start the gateway")),
        DriverStatus(
            DriverState.FAILED,
            "supervisor exited with code 2 (Error): error: cannot start the gateway",
        ),
    ),
    (
        pod("Failed", reason="Evicted", message="The node was low on resource: memory."),
        DriverStatus(DriverState.FAILED, "Evicted: The node was low on resource: memory."),
    ),
    (pod("Unknown"), DriverStatus(DriverState.UNKNOWN, "pod phase Unknown")),
    ({}, DriverStatus(DriverState.UNKNOWN, "pod phase unknown")),
]


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_pod_status(body: dict[str, Any], expected: DriverStatus) -> None:
    assert pod_status(body) == expected


def test_deletion_wins_over_the_phase() -> None:
    body = pod("Running", {"running": {}})
    body["metadata"]["deletionTimestamp"] = "2026-11-29T09:00:00Z"
    assert pod_status(body) == DriverStatus(DriverState.EXITED, "sandbox pod is being deleted")


def test_other_containers_do_not_count() -> None:
    body = pod("Running")
    body["status"]["containerStatuses"] = [{"name": "sidecar", "state": terminated(1)}]
    assert pod_status(body).state is DriverState.RUNNING


def test_long_messages_are_cut() -> None:
    status = pod_status(pod("Failed", terminated(1, "Error", "x" * 5000)))
    assert len(status.message) <= 300


@pytest.mark.parametrize(
    ("body", "heartbeat", "phase"),
    [
        (pod("Pending"), None, Phase.PROVISIONING),
        (pod("Running", {"running": {}}), None, Phase.PROVISIONING),
        (pod("Running", {"running": {}}), "fresh", Phase.READY),
        (pod("Succeeded", terminated(0)), "fresh", Phase.EXITED),
        (pod("Failed", terminated(1)), "fresh", Phase.ERROR),
    ],
)
def test_pod_phases_become_sandbox_phases(
    body: dict[str, Any], heartbeat: str | None, phase: Phase
) -> None:
    """Pending→provisioning, Running→ready (once the supervisor reports), ended with 0→
    exited, failed→error."""
    status = pod_status(body)
    now = time.time()
    facts = SandboxFacts(
        deleting=False,
        driver_state=status.state,
        driver_message=status.message,
        last_heartbeat=now if heartbeat else None,
    )
    assert derive_phase(facts, now, stale_after=30.0)[0] is phase


def test_only_managed_pods_have_a_sandbox() -> None:
    labels = {"grantbox.dev/managed-by": "grantbox", "grantbox.dev/sandbox-id": "abc"}
    assert sandbox_id_of({"metadata": {"labels": labels}}) == "abc"
    assert sandbox_id_of({"metadata": {"labels": {"grantbox.dev/sandbox-id": "abc"}}}) is None
    assert sandbox_id_of({"metadata": {"labels": {"grantbox.dev/managed-by": "grantbox"}}}) is None
    assert sandbox_id_of({}) is None
