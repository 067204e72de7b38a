"""Kubernetes teardown as the local driver's (DESIGN §3.5 #10): delete waits for the pod to be
gone or says it could not confirm and keeps going; pods whose supervisor exited as orphaned
are removed; the gateway's reconcile removes pods of sandboxes it no longer knows.

Through the real ``kubernetes`` asyncio client against ``FakeKubeApiServer`` (an in-memory
stand-in for the core/v1 endpoints; ``linger_deletes`` keeps deleted pods terminating, as
while a kubelet stops them, until the test finishes them or a forced delete removes them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from kubernetes.aio import client

from grantbox.drivers import DriverError, DriverState, DriverStatus, Reconciling
from grantbox.drivers.invocation import ORPHANED_EXIT_CODE, ORPHANED_MESSAGE
from grantbox.drivers.kubernetes import KubernetesDriver, KubernetesDriverConfig
from grantbox.gateway import GatewayServer
from tests.support.fake_kube_api import FakeKubeApiServer
from tests.support.gateway_server import GatewayCli, gateway_settings, serving

from .conftest import NAMESPACE, SANDBOX_ID, make_config, make_spec
from .test_driver_fake_api import Events

NAME = f"grantbox-sandbox-{SANDBOX_ID}"
OTHER_ID = "fedcba9876543210fedcba9876543210"
THIRD_ID = "00112233445566778899aabbccddeeff"


def _name(sandbox_id: str) -> str:
    return f"grantbox-sandbox-{sandbox_id}"


async def until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.02)


def quick(kube: KubernetesDriver) -> KubernetesDriver:
    kube.WAIT_INITIAL = 0.05
    kube.WAIT_MAX = 0.1
    kube.CONFIRM_POLL = 0.05
    return kube


@pytest.fixture
async def lingering(fake_api: FakeKubeApiServer) -> AsyncIterator[KubernetesDriver]:
    """A driver whose pods take their time to go: grace 1 s, then 0.3 s to confirm."""
    fake_api.linger_deletes = True
    kube = quick(
        KubernetesDriver(
            make_config(termination_grace_seconds=1), client.Configuration(host=fake_api.url)
        )
    )
    kube.CONFIRM_MARGIN = 0.3
    try:
        yield kube
    finally:
        await kube.aclose()


def marked(fake_api: FakeKubeApiServer, name: str = NAME) -> bool:
    pod = fake_api.objects("pods", NAMESPACE).get(name)
    return bool(pod and pod["metadata"].get("deletionTimestamp"))


async def test_delete_returns_once_the_pod_is_gone(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer
) -> None:
    fake_api.linger_deletes = True
    quick(driver)
    await driver.create(make_spec())
    deleting = asyncio.create_task(driver.delete(SANDBOX_ID))
    await until(lambda: marked(fake_api), 10, "the pod terminating")
    await asyncio.sleep(0.2)  # several confirmation polls while the pod still exists
    assert not deleting.done(), "delete returned while the pod still existed"
    fake_api.finish_deletions()
    await asyncio.wait_for(deleting, 10)
    assert fake_api.objects("pods", NAMESPACE) == {}
    assert fake_api.objects("secrets", NAMESPACE) == {}
    [pod_delete] = fake_api.requests_for("DELETE", "pods")
    assert pod_delete.query["gracePeriodSeconds"] == "10"  # the configured grace, not forced


async def test_a_pod_that_will_not_go_is_reported_and_forced_in_the_background(
    lingering: KubernetesDriver, fake_api: FakeKubeApiServer
) -> None:
    await lingering.create(make_spec())
    with pytest.raises(DriverError) as failure:
        await lingering.delete(SANDBOX_ID)
    message = str(failure.value)
    assert message == (
        f"could not confirm that sandbox pod {NAME} is gone 1.3 s after deleting it; "
        "still retrying the teardown (forced) in the background"
    )
    await until(lambda: fake_api.objects("pods", NAMESPACE) == {}, 10, "the forced delete")
    graces = [r.query["gracePeriodSeconds"] for r in fake_api.requests_for("DELETE", "pods")]
    assert graces[0] == "1" and graces[-1] == "0"
    await until(lambda: fake_api.objects("secrets", NAMESPACE) == {}, 10, "the secret removed")
    await lingering.delete(SANDBOX_ID)  # now confirmed at once


async def test_the_gateway_says_it_could_not_confirm_and_delete_again_finishes(
    tmp_path: Path, fake_api: FakeKubeApiServer, lingering: KubernetesDriver
) -> None:
    with serving(gateway_settings(tmp_path), lingering) as server:
        gw = GatewayCli(server.url, server.operator_token, tmp_path)
        created = gw.json("sandbox", "create", "--name", "box", "--", "sleep", "60")
        error = gw.refused("sandbox", "delete", "box")
        assert "could not confirm that sandbox pod" in error and "still retrying" in error
        view = gw.json("sandbox", "get", "box")
        assert view["phase"] == "deleting", view  # the supervisor is answered sandbox_gone
        await until(lambda: fake_api.objects("pods", NAMESPACE) == {}, 10, "the forced delete")
        gw.ok("sandbox", "delete", "box")
        assert gw.json("sandbox", "list") == []
        assert _name(created["id"]) not in fake_api.objects("secrets", NAMESPACE)


TERMINATED_ORPHANED = {
    "phase": "Failed",
    "containerStatuses": [
        {
            "name": "supervisor",
            "state": {"terminated": {"exitCode": ORPHANED_EXIT_CODE, "reason": "Error"}},
        }
    ],
}


async def test_a_pod_whose_supervisor_exited_as_orphaned_is_removed(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer
) -> None:
    quick(driver)
    events = Events(driver.watch())
    try:
        await driver.create(make_spec())
        await driver.create(make_spec(OTHER_ID))
        await events.until(DriverState.PENDING)
        await events.until(DriverState.PENDING)
        fake_api.set_pod_status(NAMESPACE, NAME, TERMINATED_ORPHANED)
        assert await events.until(DriverState.EXITED) == (
            SANDBOX_ID,
            DriverStatus(DriverState.EXITED, ORPHANED_MESSAGE),
        )
        await until(lambda: NAME not in fake_api.objects("pods", NAMESPACE), 10, "pod removed")
        await until(
            lambda: NAME not in fake_api.objects("secrets", NAMESPACE), 10, "secret removed"
        )
        assert set(fake_api.objects("pods", NAMESPACE)) == {_name(OTHER_ID)}
        # Our own removal is quiet: no "the sandbox pod was deleted" failure follows.
        await asyncio.sleep(0.3)
        while not events.empty():
            sandbox_id, status = await events.next()
            assert status.state is not DriverState.FAILED, (sandbox_id, status)
    finally:
        await events.close()


async def test_reconcile_removes_only_pods_of_sandboxes_the_gateway_no_longer_knows(
    fake_api: FakeKubeApiServer, config: KubernetesDriverConfig
) -> None:
    elsewhere = replace(config, gateway_url="http://another-grantbox.other.svc:7443")
    kube = quick(KubernetesDriver(config, client.Configuration(host=fake_api.url)))
    stranger = KubernetesDriver(elsewhere, client.Configuration(host=fake_api.url))
    try:
        assert isinstance(kube, Reconciling)
        await kube.create(make_spec())
        await kube.create(make_spec(OTHER_ID))
        await stranger.create(make_spec(THIRD_ID))  # another grantbox's, same namespace
        asked: list[float] = []
        late = "abcdefabcdefabcdefabcdefabcdef00"

        async def known() -> set[str]:
            asked.append(time.monotonic())
            # A sandbox created while the driver was listing: its pod is not judged now.
            await kube.create(make_spec(late))
            return {SANDBOX_ID}

        assert await kube.reconcile(known) == [OTHER_ID]
        assert len(asked) == 1
        await until(
            lambda: _name(OTHER_ID) not in fake_api.objects("pods", NAMESPACE), 10, "stray gone"
        )
        await until(
            lambda: _name(OTHER_ID) not in fake_api.objects("secrets", NAMESPACE), 10, "secret"
        )
        left = set(fake_api.objects("pods", NAMESPACE))
        assert left == {NAME, _name(THIRD_ID), _name(late)}

        async def nothing() -> set[str]:
            raise AssertionError("asked although nothing of ours runs")

        unconfigured = KubernetesDriver(
            replace(config, gateway_url=""), client.Configuration(host=fake_api.url)
        )
        try:
            assert await unconfigured.reconcile(nothing) == []  # cannot tell ours apart
        finally:
            await unconfigured.aclose()
    finally:
        await stranger.aclose()
        await kube.aclose()


@pytest.fixture
def stray(fake_api: FakeKubeApiServer, config: KubernetesDriverConfig) -> str:
    """A sandbox pod and secret left behind by an earlier gateway (its record is gone)."""

    async def leave() -> None:
        kube = KubernetesDriver(config, client.Configuration(host=fake_api.url))
        try:
            await kube.create(make_spec(OTHER_ID))
        finally:
            await kube.aclose()

    asyncio.run(leave())
    return _name(OTHER_ID)


def test_the_gateway_reconciles_when_it_starts(
    tmp_path: Path, fake_api: FakeKubeApiServer, config: KubernetesDriverConfig, stray: str
) -> None:
    kube = quick(KubernetesDriver(config, client.Configuration(host=fake_api.url)))
    server: GatewayServer
    with serving(gateway_settings(tmp_path), kube) as server:
        gw = GatewayCli(server.url, server.operator_token, tmp_path)
        created = gw.json("sandbox", "create", "--name", "kept", "--", "sleep", "60")
        deadline = time.monotonic() + 10
        while stray in fake_api.objects("pods", NAMESPACE) or stray in fake_api.objects(
            "secrets", NAMESPACE
        ):
            assert time.monotonic() < deadline, "the stray pod was not removed"
            time.sleep(0.05)
        assert set(fake_api.objects("pods", NAMESPACE)) == {_name(created["id"])}
