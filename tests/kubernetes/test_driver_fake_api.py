"""The driver through the real ``kubernetes`` asyncio client against FakeKubeApiServer."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from kubernetes.aio import client

from grantbox.drivers import ComputeDriver, DriverError, DriverState, DriverStatus
from grantbox.drivers.kubernetes import (
    KubernetesDriver,
    KubernetesDriverConfig,
    pod_manifest,
    secret_manifest,
)
from tests.support.fake_kube_api import FakeKubeApiServer

from .conftest import NAMESPACE, SANDBOX_ID, TOKEN, make_spec

NAME = f"grantbox-sandbox-{SANDBOX_ID}"
OTHER_ID = "fedcba9876543210fedcba9876543210"

RUNNING = {
    "phase": "Running",
    "containerStatuses": [
        {
            "name": "supervisor",
            "ready": True,
            "state": {"running": {"startedAt": "2026-11-29T09:00:00Z"}},
        }
    ],
}


def _terminated(phase: str, code: int, reason: str) -> dict[str, object]:
    return {
        "phase": phase,
        "containerStatuses": [
            {"name": "supervisor", "state": {"terminated": {"exitCode": code, "reason": reason}}}
        ],
    }


class Events:
    """Collects ``driver.watch()`` output on a task; ``next()`` waits with a bound."""

    def __init__(self, stream: AsyncIterator[tuple[str, DriverStatus]]) -> None:
        self.queue: asyncio.Queue[tuple[str, DriverStatus]] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump(stream))

    async def _pump(self, stream: AsyncIterator[tuple[str, DriverStatus]]) -> None:
        async for item in stream:
            await self.queue.put(item)

    async def next(self, timeout: float = 10.0) -> tuple[str, DriverStatus]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def until(self, state: DriverState, timeout: float = 10.0) -> tuple[str, DriverStatus]:
        while True:
            item = await self.next(timeout)
            if item[1].state is state:
                return item

    def empty(self) -> bool:
        return self.queue.empty()

    async def close(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def events(driver: KubernetesDriver) -> AsyncIterator[Events]:
    collected = Events(driver.watch())
    yield collected
    await collected.close()


async def test_it_is_a_compute_driver(driver: KubernetesDriver) -> None:
    assert isinstance(driver, ComputeDriver)


async def test_create_sends_the_pod_then_its_secret_owned_by_it(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer, config: KubernetesDriverConfig
) -> None:
    spec = make_spec()
    await driver.create(spec)

    posts = [r for r in fake_api.requests if r.method == "POST"]
    assert [r.path for r in posts] == [
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        f"/api/v1/namespaces/{NAMESPACE}/secrets",
    ]
    pod_uid = fake_api.objects("pods", NAMESPACE)[NAME]["metadata"]["uid"]
    assert posts[0].body == pod_manifest(spec, config)
    assert posts[1].body == secret_manifest(spec, config, pod_uid)
    assert TOKEN not in repr(posts[0].body)
    stored = fake_api.objects("secrets", NAMESPACE)[NAME]
    assert base64.b64decode(stored["data"]["token"]).decode() == TOKEN
    assert [o["uid"] for o in stored["metadata"]["ownerReferences"]] == [pod_uid]
    assert set(fake_api.objects("pods", NAMESPACE)) == {NAME}


async def test_status_follows_the_pod(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer
) -> None:
    assert (await driver.status(SANDBOX_ID)).state is DriverState.UNKNOWN
    await driver.create(make_spec())
    assert (await driver.status(SANDBOX_ID)).state is DriverState.PENDING
    fake_api.set_pod_status(NAMESPACE, NAME, RUNNING)
    assert await driver.status(SANDBOX_ID) == DriverStatus(DriverState.RUNNING, "")


async def test_watch_maps_pod_phases(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer, events: Events
) -> None:
    await driver.create(make_spec())
    assert await events.next() == (SANDBOX_ID, DriverStatus(DriverState.PENDING, "pod is pending"))
    fake_api.set_pod_status(NAMESPACE, NAME, RUNNING)
    assert await events.next() == (SANDBOX_ID, DriverStatus(DriverState.RUNNING, ""))
    fake_api.set_pod_status(NAMESPACE, NAME, _terminated("Failed", 3, "Error"))
    sandbox_id, status = await events.next()
    assert sandbox_id == SANDBOX_ID
    assert status == DriverStatus(DriverState.FAILED, "supervisor exited with code 3 (Error)")


async def test_watch_reports_pods_that_existed_before_it_started(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer
) -> None:
    await driver.create(make_spec())
    await driver.create(make_spec(OTHER_ID))
    fake_api.set_pod_status(NAMESPACE, NAME, _terminated("Succeeded", 0, "Completed"))
    collected = Events(driver.watch())
    try:
        first = {await collected.next(), await collected.next()}
        assert first == {
            (
                SANDBOX_ID,
                DriverStatus(DriverState.EXITED, "supervisor exited with code 0 (Completed)"),
            ),
            (OTHER_ID, DriverStatus(DriverState.PENDING, "pod is pending")),
        }
        listing = [r for r in fake_api.requests if r.method == "GET" and "watch" not in r.query]
        assert listing[0].query["labelSelector"] == "grantbox.dev/managed-by=grantbox"
        for _ in range(200):
            if fake_api.watch_requests():
                break
            await asyncio.sleep(0.025)
        watch = fake_api.watch_requests()[0]
        assert watch.query["labelSelector"] == "grantbox.dev/managed-by=grantbox"
        assert watch.query["resourceVersion"]  # resumes from the list, never re-lists all
    finally:
        await collected.close()


async def test_delete_removes_pod_and_secret_and_is_quiet_on_the_watch(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer, events: Events
) -> None:
    await driver.create(make_spec())
    await events.until(DriverState.PENDING)
    await driver.delete(SANDBOX_ID)
    deletes = [(r.method, r.path) for r in fake_api.requests if r.method == "DELETE"]
    assert deletes == [
        ("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{NAME}"),
        ("DELETE", f"/api/v1/namespaces/{NAMESPACE}/secrets/{NAME}"),
    ]
    pod_delete = fake_api.requests_for("DELETE", "pods")[0]
    assert pod_delete.query["gracePeriodSeconds"] == "10"
    assert pod_delete.query["propagationPolicy"] == "Background"
    assert fake_api.objects("pods", NAMESPACE) == {}
    assert fake_api.objects("secrets", NAMESPACE) == {}
    # The gateway already shows the sandbox as deleting: our own delete raises no error.
    await driver.create(make_spec(OTHER_ID))
    sandbox_id, _ = await events.next()
    assert sandbox_id == OTHER_ID


async def test_delete_is_idempotent(driver: KubernetesDriver, fake_api: FakeKubeApiServer) -> None:
    await driver.delete(SANDBOX_ID)
    await driver.create(make_spec())
    await driver.delete(SANDBOX_ID)
    await driver.delete(SANDBOX_ID)
    assert fake_api.objects("pods", NAMESPACE) == {}
    assert fake_api.objects("secrets", NAMESPACE) == {}


async def test_delete_failure_is_reported(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer
) -> None:
    await driver.create(make_spec())
    fake_api.fail_next("DELETE", "pods", 403)
    with pytest.raises(DriverError, match="delete the sandbox Pod: 403"):
        await driver.delete(SANDBOX_ID)
    assert set(fake_api.objects("pods", NAMESPACE)) == {NAME}


async def test_pod_deleted_behind_our_back_is_an_error(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer, events: Events
) -> None:
    await driver.create(make_spec())
    await events.until(DriverState.PENDING)
    fake_api.delete_pod_behind_our_back(NAMESPACE, NAME)
    assert await events.next() == (
        SANDBOX_ID,
        DriverStatus(DriverState.FAILED, "the sandbox pod was deleted"),
    )
    # The token Secret names the Pod as its owner, so the garbage collector (the fake's
    # stand-in for it) takes the Secret too: no token is left behind in the namespace.
    assert fake_api.objects("secrets", NAMESPACE) == {}


async def test_failed_pod_create_sends_no_secret_and_hides_the_token(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_api.fail_next("POST", "pods", 500)
    with pytest.raises(DriverError) as failure:
        await driver.create(make_spec())
    assert "create the sandbox Pod: 500" in str(failure.value)
    assert TOKEN not in str(failure.value)
    assert fake_api.requests_for("POST", "secrets") == []
    assert fake_api.objects("pods", NAMESPACE) == {}
    assert TOKEN not in caplog.text


async def test_failed_secret_create_removes_the_pod_quietly(
    driver: KubernetesDriver,
    fake_api: FakeKubeApiServer,
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(200):  # the driver is watching before anything happens
        if fake_api.watch_requests():
            break
        await asyncio.sleep(0.05)
    fake_api.fail_next("POST", "secrets", 500)
    with pytest.raises(DriverError) as failure:
        await driver.create(make_spec())
    assert "create the sandbox token Secret: 500" in str(failure.value)
    assert fake_api.objects("pods", NAMESPACE) == {}
    assert fake_api.objects("secrets", NAMESPACE) == {}
    assert TOKEN not in str(failure.value) and TOKEN not in caplog.text
    # Our own clean-up is not reported as a pod deleted behind our back: the watch shows
    # the first pod pending, then (nothing about its removal) the second.
    await driver.create(make_spec())
    seen = [await events.next() for _ in range(2)]
    assert [status.state for _, status in seen] == [DriverState.PENDING, DriverState.PENDING]


async def test_leftover_objects_make_create_fail_closed(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer
) -> None:
    await driver.create(make_spec())
    with pytest.raises(DriverError, match="409"):
        await driver.create(make_spec())
    assert len(fake_api.requests_for("POST", "secrets")) == 1  # the second stopped at its Pod
    assert set(fake_api.objects("pods", NAMESPACE)) == {NAME}  # and left the first alone
    assert set(fake_api.objects("secrets", NAMESPACE)) == {NAME}


def test_schema_invalid_bodies_are_refused_by_the_fake_like_the_api(
    fake_api: FakeKubeApiServer, config: KubernetesDriverConfig
) -> None:
    pod = pod_manifest(make_spec(), config)
    pod["spec"]["containers"][0]["securityContext"]["capabilitiez"] = {"add": ["ALL"]}
    answer = httpx.post(f"{fake_api.url}/api/v1/namespaces/{NAMESPACE}/pods", json=pod)
    assert answer.status_code == 422
    assert "capabilitiez" in answer.json()["message"]
    assert fake_api.objects("pods", NAMESPACE) == {}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"spiffe_csi": False},
        {"service_account": "sandbox", "runtime_class": "kata", "read_only_root": False},
        {"apparmor_profile": "Localhost/grantbox-sandbox", "image_pull_policy": "Always"},
        {
            "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
            "extra_labels": {"team": "agents"},
        },
    ],
)
async def test_the_client_sends_exactly_our_manifest(
    fake_api: FakeKubeApiServer, config: KubernetesDriverConfig, changes: dict[str, Any]
) -> None:
    """The client's models drop fields they do not know; every field we set must survive."""
    variant = replace(config, **changes)
    kube = KubernetesDriver(variant, client.Configuration(host=fake_api.url))
    try:
        await kube.create(make_spec())
    finally:
        await kube.aclose()
    [secret_post] = fake_api.requests_for("POST", "secrets")
    [pod_post] = fake_api.requests_for("POST", "pods")
    pod_uid = fake_api.objects("pods", NAMESPACE)[NAME]["metadata"]["uid"]
    assert secret_post.body == secret_manifest(make_spec(), variant, pod_uid)
    assert pod_post.body == pod_manifest(make_spec(), variant)


async def test_watch_relists_after_410_gone(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer, events: Events
) -> None:
    await driver.create(make_spec())
    await events.until(DriverState.PENDING)
    fake_api.expire_history()
    fake_api.drop_watches()
    fake_api.set_pod_status(NAMESPACE, NAME, RUNNING)
    assert await events.until(DriverState.RUNNING) == (
        SANDBOX_ID,
        DriverStatus(DriverState.RUNNING),
    )
    lists = [r for r in fake_api.requests if r.method == "GET" and r.path.endswith("/pods")]
    assert sum("watch" not in r.query for r in lists) >= 2  # listed again after 410


async def test_watch_survives_dropped_streams_and_api_errors(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer, events: Events
) -> None:
    await driver.create(make_spec())
    await events.until(DriverState.PENDING)
    fake_api.fail_next("GET", "pods", 503)
    fake_api.drop_watches()
    fake_api.set_pod_status(NAMESPACE, NAME, RUNNING)
    assert await events.until(DriverState.RUNNING) == (
        SANDBOX_ID,
        DriverStatus(DriverState.RUNNING),
    )


async def test_watch_ignores_pods_grantbox_does_not_manage(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer, events: Events
) -> None:

    stranger = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stranger", "labels": {"grantbox.dev/sandbox-id": OTHER_ID}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    body = client.V1Pod.from_dict(stranger)
    assert body is not None
    async with client.ApiClient(client.Configuration(host=fake_api.url)) as api:
        await client.CoreV1Api(api).create_namespaced_pod(NAMESPACE, body)
    await driver.create(make_spec())
    sandbox_id, _ = await events.next()
    assert sandbox_id == SANDBOX_ID
    assert events.empty()


async def test_watch_does_not_spin_on_a_server_that_ends_every_watch(
    driver: KubernetesDriver, fake_api: FakeKubeApiServer
) -> None:
    fake_api.end_watches_at_once = True
    collected = Events(driver.watch())
    try:
        await asyncio.sleep(1.0)
    finally:
        await collected.close()
    # With the retry delays of 0.05-0.1 s this is about ten; unguarded it is hundreds.
    assert 1 <= len(fake_api.watch_requests()) <= 30
