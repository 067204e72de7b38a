"""The Pod and Secret the driver sends, built by pure functions and schema-validated."""

from __future__ import annotations

import base64
import string

import kubernetes_validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grantbox.drivers import DriverError
from grantbox.drivers.kubernetes import (
    SANDBOX_CAPABILITIES,
    KubernetesDriverConfig,
    pod_manifest,
    resource_name,
    sandbox_labels,
    secret_manifest,
    supervisor_args,
)

from .conftest import NAMESPACE, SANDBOX_ID, TOKEN, make_config, make_spec

# The oldest release whose schema knows every field we set (appArmorProfile is 1.30+),
# and the newest the validator ships.
SCHEMA_VERSIONS = ("1.30.0", "1.37.0")
POD_UID = "9c4f2b7e-0d1a-4e55-8a6b-3f1d2c0e9a77"  # what the API server gave the Pod


def validate(manifest: dict[str, object]) -> None:
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def _container(pod: dict[str, object]) -> dict[str, object]:
    containers = pod["spec"]["containers"]  # type: ignore[index]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def test_the_validator_rejects_what_the_api_would() -> None:
    pod = pod_manifest(make_spec(), make_config())
    pod["spec"]["automountServiceAccountToken"] = "no"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)
    pod = pod_manifest(make_spec(), make_config())
    pod["spec"]["containers"][0]["capabilitiez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)


@pytest.mark.parametrize(
    "config",
    [
        make_config(),
        make_config(spiffe_csi=False),
        make_config(service_account="sandbox", runtime_class="kata", read_only_root=False),
        make_config(apparmor_profile="Localhost/grantbox-sandbox", image_pull_policy="Always"),
        make_config(
            resources={"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
            extra_labels={"team": "agents"},
            socket_path="/run/spire/sockets/agent.sock",
        ),
    ],
)
def test_every_manifest_validates_against_the_kubernetes_schema(
    config: KubernetesDriverConfig,
) -> None:
    spec = make_spec()
    validate(pod_manifest(spec, config))
    validate(secret_manifest(spec, config, POD_UID))


def test_pod_runs_the_supervisor_with_the_agent_command_as_arguments() -> None:
    container = _container(pod_manifest(make_spec(), make_config()))
    assert container["command"] == ["grantbox", "supervisor", "run"]
    assert container["args"] == [
        "--gateway",
        "http://grantbox.grantbox.svc.cluster.local:7443",
        "--sandbox-id",
        SANDBOX_ID,
        "--token-file",
        "/run/grantbox/supervisor-token/token",
        "--identity-socket",
        "unix:///spiffe-workload-api/spire-agent.sock",
        "--",
        "curl",
        "-s",
        "http://alpha.example/hello",
    ]


def test_proxy_workers_reach_the_supervisor_command_line() -> None:
    args = supervisor_args(make_spec(command=()), make_config(proxy_workers=4))
    at = args.index("--proxy-workers")
    assert args[at + 1] == "4"


def test_no_command_means_no_separator() -> None:
    args = supervisor_args(make_spec(command=()), make_config())
    assert "--" not in args


def test_labels_and_annotations_name_the_sandbox() -> None:
    spec, config = make_spec(), make_config()
    for manifest in (pod_manifest(spec, config), secret_manifest(spec, config, POD_UID)):
        metadata = manifest["metadata"]
        assert metadata["name"] == f"grantbox-sandbox-{SANDBOX_ID}"
        assert metadata["namespace"] == NAMESPACE
        assert metadata["labels"] == {
            "grantbox.dev/managed-by": "grantbox",
            "grantbox.dev/sandbox-id": SANDBOX_ID,
            "grantbox.dev/sandbox": "agent",
        }
        assert metadata["annotations"]["grantbox.dev/sandbox-id"] == SANDBOX_ID


def test_spec_labels_cannot_override_the_identity_labels() -> None:
    spec = make_spec(labels={"grantbox.dev/sandbox-id": "someone-else"})
    labels = sandbox_labels(spec, make_config())
    assert labels["grantbox.dev/sandbox-id"] == SANDBOX_ID
    assert labels["grantbox.dev/managed-by"] == "grantbox"


def test_pod_hardening() -> None:
    pod = pod_manifest(make_spec(), make_config())
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    for shared in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
        assert spec[shared] is False
    context = _container(pod)["securityContext"]
    assert context["privileged"] is False  # type: ignore[index]
    assert context["capabilities"] == {  # type: ignore[index]
        "drop": ["ALL"],
        "add": ["KILL", "NET_ADMIN", "SETGID", "SETUID", "SYS_ADMIN"],
    }
    assert set(SANDBOX_CAPABILITIES) == {"KILL", "NET_ADMIN", "SETGID", "SETUID", "SYS_ADMIN"}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}  # type: ignore[index]
    assert context["readOnlyRootFilesystem"] is True  # type: ignore[index]
    # The API refuses allowPrivilegeEscalation=false next to SYS_ADMIN; we never send it.
    assert "allowPrivilegeEscalation" not in context  # type: ignore[operator]


def test_token_is_a_0400_file_from_the_secret_and_never_in_the_pod() -> None:
    spec, config = make_spec(), make_config()
    pod = pod_manifest(spec, config)
    assert TOKEN not in repr(pod)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    secret_volume = volumes["supervisor-token"]["secret"]
    assert secret_volume == {
        "secretName": f"grantbox-sandbox-{SANDBOX_ID}",
        "defaultMode": 0o400,
        "items": [{"key": "token", "path": "token", "mode": 0o400}],
    }
    mounts = {m["name"]: m for m in _container(pod)["volumeMounts"]}  # type: ignore[attr-defined]
    assert mounts["supervisor-token"] == {
        "name": "supervisor-token",
        "mountPath": "/run/grantbox/supervisor-token",
        "readOnly": True,
    }
    secret = secret_manifest(spec, config, POD_UID)
    assert secret["immutable"] is True
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN


def test_the_token_secret_is_owned_by_its_pod() -> None:
    spec, config = make_spec(), make_config()
    secret = secret_manifest(spec, config, POD_UID)
    pod = pod_manifest(spec, config)
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": POD_UID}
    ]
    assert "ownerReferences" not in pod["metadata"]


def test_workload_api_socket_comes_from_the_spiffe_csi_driver_read_only() -> None:
    config = make_config(socket_path="/run/spire/sockets/agent.sock")
    pod = pod_manifest(make_spec(), config)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["spiffe-workload-api"] == {
        "name": "spiffe-workload-api",
        "csi": {"driver": "csi.spiffe.io", "readOnly": True},
    }
    container = _container(pod)
    mounts = {m["name"]: m for m in container["volumeMounts"]}  # type: ignore[attr-defined]
    assert mounts["spiffe-workload-api"]["mountPath"] == "/run/spire/sockets"
    assert mounts["spiffe-workload-api"]["readOnly"] is True
    assert container["env"] == [
        {"name": "LANG", "value": "C.UTF-8"},
        {"name": "SPIFFE_ENDPOINT_SOCKET", "value": "unix:///run/spire/sockets/agent.sock"},
    ]


def test_without_spire_the_socket_directory_is_an_empty_dir() -> None:
    pod = pod_manifest(make_spec(), make_config(spiffe_csi=False))
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "csi" not in volumes["spiffe-workload-api"]
    assert "emptyDir" in volumes["spiffe-workload-api"]


def test_unreachable_gateway_url_is_refused_at_create() -> None:
    config = make_config(gateway_url="")
    with pytest.raises(DriverError, match="GRANTBOX_K8S_GATEWAY_URL"):
        pod_manifest(make_spec(gateway_url="http://0.0.0.0:7443"), config)
    pod = pod_manifest(make_spec(gateway_url="http://10.0.0.7:7443/"), config)
    assert _container(pod)["args"][1] == "http://10.0.0.7:7443"  # type: ignore[index]


@pytest.mark.parametrize(
    "bad_id", ["", "UPPER", "-leading", "trailing-", "a" * 47, "with/slash", "dot.ted"]
)
def test_sandbox_ids_that_cannot_name_objects_are_refused(bad_id: str) -> None:
    with pytest.raises(DriverError):
        resource_name(bad_id)


_ids = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=46)
_args = st.lists(st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s), max_size=5)


@settings(max_examples=12, deadline=None)
@given(
    sandbox_id=_ids,
    command=_args,
    name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
)
def test_manifests_validate_for_any_sandbox(sandbox_id: str, command: list[str], name: str) -> None:
    spec = make_spec(
        sandbox_id=sandbox_id,
        name=name,
        command=tuple(command),
        labels={"grantbox.dev/sandbox": name},
    )
    config = make_config()
    pod = pod_manifest(spec, config)
    kubernetes_validate.validate(pod, "1.37.0", strict=True)
    kubernetes_validate.validate(secret_manifest(spec, config, POD_UID), "1.37.0", strict=True)
    args = _container(pod)["args"]
    if command:
        assert args[-len(command) - 1 :] == ["--", *command]  # type: ignore[index]
    else:
        assert "--" not in args  # type: ignore[operator]
