"""Driver configuration: the socket path rules and the GRANTBOX_K8S_* variables."""

from __future__ import annotations

import pytest

from grantbox.drivers import DriverError, make_driver
from grantbox.drivers.kubernetes import (
    KubernetesConfigError,
    KubernetesDriver,
    KubernetesDriverConfig,
    gateway_url_problem,
    socket_path_problem,
)

from .conftest import make_config


@pytest.mark.parametrize(
    "path",
    [
        "/spiffe-workload-api/spire-agent.sock",
        "/run/spire/sockets/agent.sock",
        "/var/run/spire/agent.sock",
        "/opt/spire/agent/api.sock",
    ],
)
def test_dedicated_socket_directories_are_accepted(path: str) -> None:
    assert socket_path_problem(path) is None
    assert make_config(socket_path=path).socket_path == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("spire/agent.sock", "not absolute"),
        ("unix:///spiffe-workload-api/spire-agent.sock", "not a URI"),
        ("/agent.sock", "directly under /"),
        ("/run/agent.sock", "shared"),
        ("/var/agent.sock", "shared"),
        ("/tmp/agent.sock", "shared"),
        ("/etc/agent.sock", "shared"),
        ("/var/run/agent.sock", "shared"),
        ("/usr/local/agent.sock", "shared"),
        ("/proc/self/agent.sock", "shared"),
        ("/dev/shm/agent.sock", "shared"),
        ("/spiffe workload/agent.sock", "whitespace"),
        ("/spiffe\tworkload/agent.sock", "whitespace"),
        ("/spiffe/agent.sock\n", "whitespace"),
        ("/spiffe/\x00agent.sock", "control"),
        ("/spiffe/../agent.sock", "normalised"),
        ("/spiffe/./agent.sock", "normalised"),
        ("//spiffe/agent.sock", "normalised"),
        ("/spiffe/agent.sock/", "normalised"),
        ("/spiffe//agent.sock", "normalised"),
        ("/" + "d" * 60 + "/" + "s" * 60 + ".sock", "longer than 107"),
        ("/run/grantbox/supervisor-token/agent.sock", "overlaps the supervisor token"),
        ("/run/grantbox/agent.sock", "overlaps the supervisor token"),
    ],
)
def test_unsafe_socket_paths_are_refused_with_a_reason(path: str, reason: str) -> None:
    problem = socket_path_problem(path)
    assert problem is not None and reason in problem
    with pytest.raises(KubernetesConfigError, match=reason.split()[0]):
        make_config(socket_path=path)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://grantbox.grantbox.svc:7443", None),
        ("https://gateway.example", None),
        ("http://0.0.0.0:7443", "listen address"),
        ("http://127.0.0.1:7443", "listen address"),
        ("http://localhost:7443", "listen address"),
        ("http://[::1]:7443", "loopback"),
        ("grantbox:7443", "http(s)"),
        ("ftp://grantbox", "http(s)"),
    ],
)
def test_gateway_url_must_be_reachable_from_pods(url: str, problem: str | None) -> None:
    found = gateway_url_problem(url)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"namespace": "Bad_Namespace"}, "namespace"),
        ({"namespace": ""}, "namespace"),
        ({"image": ""}, "image"),
        ({"image": "bad image"}, "image"),
        ({"image_pull_policy": "Sometimes"}, "pull policy"),
        ({"apparmor_profile": "unconfined"}, "AppArmor"),
        ({"gateway_url": "http://0.0.0.0:7443"}, "GRANTBOX_K8S_GATEWAY_URL"),
        ({"termination_grace_seconds": -1}, "grace"),
        ({"proxy_workers": 0}, "proxy workers"),
        ({"extra_labels": {"grantbox.dev/sandbox-id": "x"}}, "set by grantbox"),
        ({"extra_labels": {"team": "not valid!"}}, "label value"),
    ],
)
def test_bad_settings_fail_at_driver_start(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(KubernetesConfigError, match=message):
        make_config(**overrides)


def test_config_from_environment() -> None:
    env = {
        "GRANTBOX_K8S_NAMESPACE": "sandboxes",
        "GRANTBOX_K8S_SANDBOX_IMAGE": "registry.example/sandbox:1",
        "GRANTBOX_K8S_GATEWAY_URL": "http://grantbox.grantbox.svc:7443",
        "GRANTBOX_K8S_WORKLOAD_API_SOCKET": "/run/spire/sockets/agent.sock",
        "GRANTBOX_K8S_SPIFFE_CSI": "false",
        "GRANTBOX_K8S_IMAGE_PULL_POLICY": "Always",
        "GRANTBOX_K8S_SERVICE_ACCOUNT": "grantbox-sandbox",
        "GRANTBOX_K8S_RUNTIME_CLASS": "kata",
        "GRANTBOX_K8S_APPARMOR_PROFILE": "Localhost/grantbox",
        "GRANTBOX_K8S_READ_ONLY_ROOT": "no",
        "GRANTBOX_K8S_TERMINATION_GRACE_SECONDS": "20",
        "GRANTBOX_K8S_CPU_LIMIT": "2",
        "GRANTBOX_K8S_MEMORY_REQUEST": "256Mi",
        "GRANTBOX_K8S_PROXY_WORKERS": "3",
    }
    config = KubernetesDriverConfig.from_env(env)
    assert config == KubernetesDriverConfig(
        namespace="sandboxes",
        image="registry.example/sandbox:1",
        gateway_url="http://grantbox.grantbox.svc:7443",
        socket_path="/run/spire/sockets/agent.sock",
        spiffe_csi=False,
        image_pull_policy="Always",
        service_account="grantbox-sandbox",
        runtime_class="kata",
        apparmor_profile="Localhost/grantbox",
        read_only_root=False,
        termination_grace_seconds=20,
        resources={"limits": {"cpu": "2"}, "requests": {"memory": "256Mi"}},
        proxy_workers=3,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GRANTBOX_K8S_NAMESPACE": "ns"}, "GRANTBOX_K8S_SANDBOX_IMAGE"),
        (
            {
                "GRANTBOX_K8S_NAMESPACE": "ns",
                "GRANTBOX_K8S_SANDBOX_IMAGE": "i",
                "GRANTBOX_K8S_SPIFFE_CSI": "maybe",
            },
            "GRANTBOX_K8S_SPIFFE_CSI: Input should be a valid boolean",
        ),
        (
            {
                "GRANTBOX_K8S_NAMESPACE": "ns",
                "GRANTBOX_K8S_SANDBOX_IMAGE": "i",
                "GRANTBOX_K8S_WORKLOAD_API_SOCKET": "/tmp/agent.sock",
            },
            "shared",
        ),
        (
            {
                "GRANTBOX_K8S_NAMESPACE": "ns",
                "GRANTBOX_K8S_SANDBOX_IMAGE": "i",
                "GRANTBOX_K8S_TERMINATION_GRACE_SECONDS": "ten",
            },
            "GRANTBOX_K8S_TERMINATION_GRACE_SECONDS: Input should be a valid integer",
        ),
        (
            {
                "GRANTBOX_K8S_NAMESPACE": "ns",
                "GRANTBOX_K8S_SANDBOX_IMAGE": "i",
                "GRANTBOX_K8S_PROXY_WORKERS": "65",
            },
            "GRANTBOX_K8S_PROXY_WORKERS: Input should be less than or equal to 64",
        ),
    ],
)
def test_bad_environment_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(KubernetesConfigError, match=message):
        KubernetesDriverConfig.from_env(env)


def test_registered_as_the_kubernetes_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRANTBOX_K8S_NAMESPACE", "sandboxes")
    monkeypatch.setenv("GRANTBOX_K8S_SANDBOX_IMAGE", "registry.example/sandbox:1")
    monkeypatch.setenv("GRANTBOX_K8S_GATEWAY_URL", "http://grantbox.grantbox.svc:7443")
    driver = make_driver("kubernetes")
    assert isinstance(driver, KubernetesDriver)
    assert driver.config.namespace == "sandboxes"
    monkeypatch.setenv("GRANTBOX_K8S_WORKLOAD_API_SOCKET", "/agent.sock")
    with pytest.raises(DriverError, match="directly under /"):
        make_driver("kubernetes")
