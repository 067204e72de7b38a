"""Pod resources from the sandbox's policy limits, the driver's defaults and the operator's
ceilings: pure decisions, schema-validated, then through the real client and a real gateway.

What the pod's ``resources`` cannot show is the agent's own bound inside the pod: the
supervisor applies the policy's limits (and seccomp and the minimal root) there with the
same launch code as on one host; ``test_pod_end_to_end`` runs it in a container and checks.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.aio import client
from kubernetes.utils.quantity import parse_quantity

from grantbox.drivers import RequestedLimits, SandboxRefused
from grantbox.drivers.kubernetes import (
    SUPERVISOR_MEMORY_MIB,
    SUPERVISOR_MILLICPU,
    WORKER_MEMORY_MIB,
    WORKER_MILLICPU,
    KubernetesConfigError,
    KubernetesDriver,
    KubernetesDriverConfig,
    ceiling_problem,
    millicores,
    pod_manifest,
    pod_resources,
    supervisor_share,
)
from grantbox.profiles.isolation import (
    MAX_CPUS,
    MAX_MEMORY_MIB,
    MAX_PROCESSES,
    MIN_CPUS,
    MIN_MEMORY_MIB,
    MIN_PROCESSES,
)
from tests.support.fake_kube_api import FakeKubeApiServer
from tests.support.gateway_server import GatewayCli, gateway_settings, serving

from .conftest import NAMESPACE, make_config, make_spec
from .test_manifests import SCHEMA_VERSIONS

DEFAULTS = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}

_limits = st.builds(
    RequestedLimits,
    processes=st.none() | st.integers(MIN_PROCESSES, MAX_PROCESSES),
    memory_mib=st.none() | st.integers(MIN_MEMORY_MIB, MAX_MEMORY_MIB),
    cpus=st.none() | st.floats(MIN_CPUS, MAX_CPUS, allow_nan=False),
)
_defaults = st.sampled_from(
    [{}, DEFAULTS, {"limits": {"memory": "2Gi"}}, {"requests": {"cpu": "2"}}]
)


def _bytes(text: str) -> Decimal:
    return Decimal(parse_quantity(text))


@given(_limits, _defaults)
def test_what_the_sandbox_sets_is_reserved_in_full_with_the_supervisors_share(
    limits: RequestedLimits, defaults: dict[str, dict[str, str]]
) -> None:
    config = make_config(resources=defaults)
    resources = pod_resources(limits, config)
    for resource, asked, share, unit in (
        ("memory", limits.memory_mib, SUPERVISOR_MEMORY_MIB, Decimal(1024 * 1024)),
        ("cpu", limits.cpus, SUPERVISOR_MILLICPU, Decimal("0.001")),
    ):
        if asked is None:  # the driver's defaults, untouched
            for kind in ("requests", "limits"):
                assert resources.get(kind, {}).get(resource) == defaults.get(kind, {}).get(resource)
            continue
        request, limit = resources["requests"][resource], resources["limits"][resource]
        assert request == limit
        whole = millicores(asked) if resource == "cpu" else asked
        assert _bytes(limit) == (whole + share) * unit
        if resource == "cpu":
            # Whole millicores, never less than asked (up to float noise), less than 1m more.
            assert limit.endswith("m") and asked * 1000 - 1e-6 <= whole < asked * 1000 + 1
        else:
            assert limit.endswith("Mi")
    assert set(resources) <= {"requests", "limits"}
    assert all(values for values in resources.values())
    pod = pod_manifest(make_spec(limits=limits), config)
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def test_examples() -> None:
    config = make_config(resources=DEFAULTS)
    assert pod_resources(RequestedLimits(), config) == DEFAULTS
    assert pod_resources(RequestedLimits(), make_config()) == {}
    assert pod_resources(RequestedLimits(processes=64), make_config()) == {}
    assert pod_resources(RequestedLimits(memory_mib=512, cpus=0.5), config) == {
        "requests": {"cpu": "750m", "memory": "768Mi"},
        "limits": {"cpu": "750m", "memory": "768Mi"},
    }
    assert pod_resources(RequestedLimits(memory_mib=256), config) == {
        "requests": {"cpu": "100m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert millicores(0.0105) == 11 and millicores(1.0) == 1000 and millicores(0.3) == 300
    container = pod_manifest(make_spec(limits=RequestedLimits(cpus=2)), make_config())
    assert container["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "2250m"},
        "limits": {"cpu": "2250m"},
    }
    assert "resources" not in pod_manifest(make_spec(), make_config())["spec"]["containers"][0]


@given(_limits, st.integers(1, 64))
def test_each_proxy_worker_past_the_first_adds_to_the_supervisors_share(
    limits: RequestedLimits, workers: int
) -> None:
    one = pod_resources(limits, make_config(resources=DEFAULTS))
    many = pod_resources(limits, make_config(resources=DEFAULTS, proxy_workers=workers))
    memory, cpu = supervisor_share(workers)
    assert (memory, cpu) == (
        SUPERVISOR_MEMORY_MIB + (workers - 1) * WORKER_MEMORY_MIB,
        SUPERVISOR_MILLICPU + (workers - 1) * WORKER_MILLICPU,
    )
    for kind in ("requests", "limits"):
        if limits.memory_mib is not None:
            assert many[kind]["memory"] == f"{limits.memory_mib + memory}Mi"
        if limits.cpus is not None:
            assert many[kind]["cpu"] == f"{millicores(limits.cpus) + cpu}m"
        if limits.memory_mib is None and limits.cpus is None:  # the driver's defaults
            assert many == one == DEFAULTS


def test_two_workers_reserve_another_half_core_and_96_mib() -> None:
    config = make_config(proxy_workers=2)
    assert pod_resources(RequestedLimits(memory_mib=512, cpus=1), config) == {
        "requests": {"cpu": "1750m", "memory": "864Mi"},
        "limits": {"cpu": "1750m", "memory": "864Mi"},
    }


CEILINGS = {"max_memory_mib": 4096, "max_cpus": 2.0, "max_processes": 1000}


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        (RequestedLimits(), None),
        (RequestedLimits(processes=1000, memory_mib=4096, cpus=2.0), None),
        (RequestedLimits(memory_mib=4097), "limits.memory_mib is 4097, above this cluster's "
         "ceiling of 4096 MiB of memory per sandbox; ask for less, or have the operator raise "
         "GRANTBOX_K8S_MAX_MEMORY"),
        (RequestedLimits(cpus=2.5), "ceiling of 2 CPUs per sandbox"),
        (RequestedLimits(processes=1001), "GRANTBOX_K8S_MAX_PROCESSES"),
    ],
)  # fmt: skip
def test_ceilings(limits: RequestedLimits, problem: str | None) -> None:
    found = ceiling_problem(limits, make_config(**CEILINGS))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
    assert ceiling_problem(limits, make_config()) is None  # no ceiling: anything valid goes


BASE_ENV = {"GRANTBOX_K8S_NAMESPACE": "ns", "GRANTBOX_K8S_SANDBOX_IMAGE": "i"}


def test_ceilings_and_defaults_from_the_environment() -> None:
    config = KubernetesDriverConfig.from_env(
        {
            **BASE_ENV,
            "GRANTBOX_K8S_MAX_MEMORY": "8Gi",
            "GRANTBOX_K8S_MAX_CPU": "1500m",
            "GRANTBOX_K8S_MAX_PROCESSES": "2048",
            "GRANTBOX_K8S_MEMORY_LIMIT": "1280Mi",
        }
    )
    assert (config.max_memory_mib, config.max_cpus, config.max_processes) == (8192, 1.5, 2048)
    assert config.resources == {"limits": {"memory": "1280Mi"}}
    unset = KubernetesDriverConfig.from_env(BASE_ENV)
    assert (unset.max_memory_mib, unset.max_cpus, unset.max_processes) == (None, None, None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GRANTBOX_K8S_MAX_MEMORY": "lots"},
            "GRANTBOX_K8S_MAX_MEMORY: 'lots' is not a Kubernetes",
        ),
        ({"GRANTBOX_K8S_MAX_CPU": "-1"}, "GRANTBOX_K8S_MAX_CPU: '-1' must be more than zero"),
        ({"GRANTBOX_K8S_MAX_PROCESSES": "0"}, "GRANTBOX_K8S_MAX_PROCESSES must be more than zero"),
        ({"GRANTBOX_K8S_MAX_PROCESSES": "many"}, "GRANTBOX_K8S_MAX_PROCESSES: Input should be"),
        ({"GRANTBOX_K8S_MEMORY_LIMIT": "1 Gi"}, "GRANTBOX_K8S_MEMORY_LIMIT: '1 Gi' is not"),
        ({"GRANTBOX_K8S_CPU_REQUEST": "0"}, "GRANTBOX_K8S_CPU_REQUEST: '0' must be more"),
        (
            {"GRANTBOX_K8S_CPU_REQUEST": "2", "GRANTBOX_K8S_CPU_LIMIT": "1500m"},
            "GRANTBOX_K8S_CPU_REQUEST is above GRANTBOX_K8S_CPU_LIMIT",
        ),
    ],
)
def test_bad_sizing_settings_fail_at_driver_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(KubernetesConfigError, match=message):
        KubernetesDriverConfig.from_env({**BASE_ENV, **env})


def test_unknown_resources_fail_at_driver_start() -> None:
    with pytest.raises(KubernetesConfigError, match="only requests/limits of cpu/memory"):
        make_config(resources={"limits": {"nvidia.com/gpu": "1"}})


async def test_a_sandbox_above_a_ceiling_reaches_nothing_in_the_cluster(
    fake_api: FakeKubeApiServer,
) -> None:
    kube = KubernetesDriver(make_config(**CEILINGS), client.Configuration(host=fake_api.url))
    try:
        with pytest.raises(SandboxRefused, match="MAX_MEMORY"):
            await kube.create(make_spec(limits=RequestedLimits(memory_mib=8192)))
        assert fake_api.requests == []
        await kube.create(make_spec(limits=RequestedLimits(memory_mib=1024, cpus=1.5)))
    finally:
        await kube.aclose()
    [pod] = fake_api.objects("pods", NAMESPACE).values()
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "1750m",
        "memory": "1280Mi",
    }


def _policy(gw: GatewayCli, limits: dict[str, Any]) -> str:
    return gw.write("policy.yaml", {"limits": limits})


def test_the_gateway_refuses_a_sandbox_above_the_ceiling_and_keeps_no_record(
    tmp_path: Path, fake_api: FakeKubeApiServer
) -> None:
    kube = KubernetesDriver(make_config(**CEILINGS), client.Configuration(host=fake_api.url))
    with serving(gateway_settings(tmp_path), kube) as server:
        gw = GatewayCli(server.url, server.operator_token, tmp_path)
        error = gw.refused(
            "sandbox", "create", "--name", "big", "--policy", _policy(gw, {"cpus": 4})
        )
        assert "sandbox 'big' refused: policy limits.cpus is 4, above" in error
        assert "GRANTBOX_K8S_MAX_CPU" in error
        assert gw.json("sandbox", "list") == []
        assert fake_api.objects("pods", NAMESPACE) == {}
        assert fake_api.objects("secrets", NAMESPACE) == {}
        created = gw.json(
            "sandbox", "create", "--name", "fits", "--policy",
            _policy(gw, {"cpus": 0.5, "memory_mib": 512, "processes": 100}),
        )  # fmt: skip
        pod = fake_api.objects("pods", NAMESPACE)[f"grantbox-sandbox-{created['id']}"]
        assert pod["spec"]["containers"][0]["resources"] == {
            "requests": {"cpu": "750m", "memory": "768Mi"},
            "limits": {"cpu": "750m", "memory": "768Mi"},
        }
