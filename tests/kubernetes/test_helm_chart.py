"""The Helm chart without running Helm: values, schema, and what templates use.

What is checked: values.yaml against values.schema.json; the schema refusing bad values and
agreeing with the driver on socket paths; every ``.Values`` path a template uses exists; the
ConfigMap sets only variables the gateway reads (proved by reading them); RBAC and the
ClusterSPIFFEID match what the driver creates. Rendering with real Helm is checked in
tests/interop/test_helm.py.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from grantbox.drivers import sandbox_spiffe_path
from grantbox.drivers.kubernetes import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    SANDBOX_ID_KEY,
    KubernetesDriverConfig,
    pod_manifest,
    socket_path_problem,
)
from grantbox.gateway.settings import GatewaySettings

from .conftest import make_config, make_spec

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "grantbox"
TEMPLATES = CHART / "templates"
EXAMPLE_CLUSTER_SPIFFE_ID = ROOT / "deploy" / "spire" / "cluster-spiffe-id.yaml"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(loaded)
    return loaded


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def problems(schema: dict[str, Any], values: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)
    ]


def with_(values: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(values)
    *parents, last = dotted.split(".")
    node = changed
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return changed


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "grantbox"
    assert (TEMPLATES / "NOTES.txt").is_file()


def test_default_values_validate(schema: dict[str, Any], values: dict[str, Any]) -> None:
    assert problems(schema, values) == []


@pytest.mark.parametrize(
    "changes",
    [
        {
            "database.type": "postgresql",
            "database.postgresql.existingSecret": "grantbox-db",
            "gateway.keys.existingSecret": "grantbox-keys",
        },
        {"providerTokenGrants.spiffe.enabled": False},
        {"providerTokenGrants.spiffe.workloadApiSocketPath": "/run/spire/sockets/agent.sock"},
        {"sandboxes.namespace": "grantbox-sandboxes", "sandboxes.createNamespace": True},
        {"gateway.url": "https://grantbox.example.org"},
        {"sandboxes.appArmorProfile": "Localhost/grantbox-sandbox"},
        {"image.tag": "sha256:" + "a" * 64},
        {"imagePullSecrets": [{"name": "registry-credentials"}]},
        {"sandboxes.maxResources": {"memory": "8Gi", "cpu": "4", "processes": 4096}},
        {"sandboxes.maxResources": {"cpu": 2.5}},
    ],
)
def test_supported_alternatives_validate(
    schema: dict[str, Any], values: dict[str, Any], changes: dict[str, Any]
) -> None:
    changed = values
    for dotted, value in changes.items():
        changed = with_(changed, dotted, value)
    assert problems(schema, changed) == []


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("providerTokenGrants.spiffe.workloadApiSocketPath", "/agent.sock"),
        ("providerTokenGrants.spiffe.workloadApiSocketPath", "/tmp/agent.sock"),
        ("providerTokenGrants.spiffe.workloadApiSocketPath", "/run/agent.sock"),
        ("providerTokenGrants.spiffe.workloadApiSocketPath", "spire/agent.sock"),
        ("providerTokenGrants.spiffe.workloadApiSocketPath", "/spire agent/agent.sock"),
        ("providerTokenGrants.spiffe.workloadApiSocketPath", "/spire/../agent.sock"),
        ("providerTokenGrants.spiffe.workloadApiSocketPath", ""),
        ("providerTokenGrants.spiffe.trustDomain", "Example.ORG"),
        ("providerTokenGrants.spiffe.trustDomain", ""),
        ("providerTokenGrants.spiffe.enabled", "yes"),
        ("providerTokenGrants.spiffe.unknown", 1),
        ("database.type", "mysql"),
        ("database.type", "postgresql"),  # without the URL and keys Secrets
        ("gateway.replicas", 2),
        ("gateway.port", 80),
        ("gateway.url", "grantbox:7443"),
        ("sandboxes.image.pullPolicy", "Sometimes"),
        ("sandboxes.appArmorProfile", "unconfined"),
        ("sandboxes.namespace", "Sandboxes"),
        ("sandboxes.resources.limits.memory", "lots"),
        ("sandboxes.maxResources.memory", "lots"),
        ("sandboxes.maxResources.processes", -1),
        ("sandboxes.maxResources.gpus", 1),
        ("sandboxes.proxyWorkers", 0),
        ("sandboxes.proxyWorkers", 65),
        ("service.type", "ExternalName"),
        ("imagePullSecrets", [{"name": ""}]),
        ("imagePullSecrets", [{"name": "Bad_Name"}]),
        ("typo", True),
    ],
)
def test_bad_values_are_refused(
    schema: dict[str, Any], values: dict[str, Any], dotted: str, value: Any
) -> None:
    assert problems(schema, with_(values, dotted, value)) != []


def test_postgresql_needs_both_secrets(schema: dict[str, Any], values: dict[str, Any]) -> None:
    changed = with_(values, "database.type", "postgresql")
    changed = with_(changed, "database.postgresql.existingSecret", "grantbox-db")
    assert problems(schema, changed) != []  # keys Secret still missing
    changed = with_(changed, "gateway.keys.existingSecret", "grantbox-keys")
    assert problems(schema, changed) == []


SOCKET_PATHS = [
    "/spiffe-workload-api/spire-agent.sock",
    "/run/spire/sockets/agent.sock",
    "/var/run/spire/agent.sock",
    "/a/b",
    "/agent.sock",
    "/run/agent.sock",
    "/var/run/agent.sock",
    "/usr/local/agent.sock",
    "/tmp/agent.sock",
    "/var/tmp/agent.sock",
    "/proc/self/x.sock",
    "/dev/shm/x.sock",
    "/spire/./agent.sock",
    "/spire/../agent.sock",
    "/spire//agent.sock",
    "/spire/agent.sock/",
    "/spire agent/agent.sock",
    "/run/grantbox/agent.sock",
    "/run/grantbox/supervisor-token/agent.sock",
    "/" + "d" * 60 + "/" + "s" * 60,
]


@pytest.mark.parametrize("path", SOCKET_PATHS)
def test_schema_and_driver_agree_on_socket_paths(
    schema: dict[str, Any], values: dict[str, Any], path: str
) -> None:
    accepted = not problems(
        schema, with_(values, "providerTokenGrants.spiffe.workloadApiSocketPath", path)
    )
    assert accepted == (socket_path_problem(path) is None)


def _value_paths(text: str) -> set[str]:
    found = set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text))
    found |= {
        ".providerTokenGrants.spiffe" + p
        for p in re.findall(r"\$spiffe((?:\.[A-Za-z_]\w*)+)", text)
    }
    return {p.lstrip(".") for p in found}


def test_every_value_a_template_uses_exists(values: dict[str, Any]) -> None:
    used: set[str] = set()
    for template in TEMPLATES.iterdir():
        used |= _value_paths(template.read_text())
    assert "providerTokenGrants.spiffe.workloadApiSocketPath" in used
    missing = []
    for dotted in sorted(used):
        node: Any = values
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                missing.append(dotted)
                break
            node = node[key]
    assert missing == []


def _configmap_keys() -> list[str]:
    return re.findall(
        r"^\s+(GRANTBOX_[A-Z0-9_]+):", (TEMPLATES / "configmap.yaml").read_text(), re.M
    )


BASE_ENV = {
    "GRANTBOX_K8S_NAMESPACE": "sandboxes",
    "GRANTBOX_K8S_SANDBOX_IMAGE": "registry.example/sandbox:1",
}
# A value for each variable that differs from the driver's default.
PROBES = {
    "GRANTBOX_K8S_NAMESPACE": "elsewhere",
    "GRANTBOX_K8S_SANDBOX_IMAGE": "registry.example/agent:2",
    "GRANTBOX_K8S_IMAGE_PULL_POLICY": "Always",
    "GRANTBOX_K8S_GATEWAY_URL": "http://grantbox.grantbox.svc:7443",
    "GRANTBOX_K8S_SPIFFE_CSI": "false",
    "GRANTBOX_K8S_WORKLOAD_API_SOCKET": "/run/spire/sockets/agent.sock",
    "GRANTBOX_K8S_SERVICE_ACCOUNT": "sandbox",
    "GRANTBOX_K8S_RUNTIME_CLASS": "gvisor",
    "GRANTBOX_K8S_APPARMOR_PROFILE": "RuntimeDefault",
    "GRANTBOX_K8S_READ_ONLY_ROOT": "false",
    "GRANTBOX_K8S_TERMINATION_GRACE_SECONDS": "30",
    "GRANTBOX_K8S_CPU_REQUEST": "250m",
    "GRANTBOX_K8S_MEMORY_REQUEST": "64Mi",
    "GRANTBOX_K8S_CPU_LIMIT": "2",
    "GRANTBOX_K8S_MEMORY_LIMIT": "1Gi",
    "GRANTBOX_K8S_MAX_MEMORY": "8Gi",
    "GRANTBOX_K8S_MAX_CPU": "4",
    "GRANTBOX_K8S_MAX_PROCESSES": "4096",
    "GRANTBOX_K8S_PROXY_WORKERS": "4",
}


def test_the_configmap_sets_only_what_the_gateway_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = _configmap_keys()
    assert "GRANTBOX_K8S_WORKLOAD_API_SOCKET" in keys
    baseline = KubernetesDriverConfig.from_env(BASE_ENV)
    for key in keys:
        if key.startswith("GRANTBOX_K8S_"):
            assert key in PROBES, f"{key}: add a probe value"
            changed = KubernetesDriverConfig.from_env({**BASE_ENV, key: PROBES[key]})
            assert changed != baseline, f"the driver ignores {key}"
        else:
            monkeypatch.delenv(key, raising=False)
            before = GatewaySettings.from_env()
            monkeypatch.setenv(key, str(tmp_path / key))
            assert GatewaySettings.from_env() != before, f"the gateway ignores {key}"


def _rough_render(text: str) -> list[dict[str, Any]]:
    """Drop whole-line template actions and stub inline ones. Not Helm: just enough to read
    a template's fixed structure as YAML."""
    lines = [line for line in text.splitlines() if not re.fullmatch(r"\s*\{\{.*\}\}\s*", line)]
    stubbed = re.sub(r"\{\{.*?\}\}", "stub", "\n".join(lines))
    return [doc for doc in yaml.safe_load_all(stubbed) if doc]


def test_rbac_allows_only_pods_and_secrets_as_the_driver_needs() -> None:
    role, binding = _rough_render((TEMPLATES / "rbac.yaml").read_text())
    assert role["kind"] == "Role" and binding["kind"] == "RoleBinding"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["create", "get", "list", "watch", "delete"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
    ]
    assert binding["roleRef"]["kind"] == "Role"


def _render_spiffe_id(template: str, labels: dict[str, str]) -> str:
    """Evaluate the one Go-template form the ClusterSPIFFEID uses: index .PodMeta.Labels."""

    def label(match: re.Match[str]) -> str:
        return labels[match.group(1)]

    return re.sub(r'\{\{ index \.PodMeta\.Labels "([^"]+)" \}\}', label, template)


def test_example_cluster_spiffe_id_gives_each_sandbox_its_id() -> None:
    example = yaml.safe_load(EXAMPLE_CLUSTER_SPIFFE_ID.read_text())
    assert example["kind"] == "ClusterSPIFFEID"
    assert example["apiVersion"] == "spire.spiffe.io/v1alpha1"
    spec = make_spec()
    pod = pod_manifest(spec, make_config(namespace="grantbox-sandboxes"))
    labels = pod["metadata"]["labels"]
    selector = example["spec"]["podSelector"]
    assert selector["matchLabels"] == {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    assert selector["matchLabels"].items() <= labels.items()
    assert selector["matchExpressions"] == [{"key": SANDBOX_ID_KEY, "operator": "Exists"}]
    namespace = example["spec"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    assert namespace == pod["metadata"]["namespace"]
    rendered = _render_spiffe_id(example["spec"]["spiffeIDTemplate"], labels)
    assert rendered == "spiffe://example.org" + sandbox_spiffe_path(spec.sandbox_id)


def test_chart_cluster_spiffe_id_uses_the_same_template() -> None:
    text = (TEMPLATES / "clusterspiffeid.yaml").read_text()
    match = re.search(r'spiffeIDTemplate: \{\{ printf "((?:[^"\\]|\\.)*)"', text)
    assert match is not None
    chart_template = match.group(1).replace('\\"', '"') % "example.org"
    example = yaml.safe_load(EXAMPLE_CLUSTER_SPIFFE_ID.read_text())
    assert chart_template == example["spec"]["spiffeIDTemplate"]
    doc = _rough_render(text)[0]
    assert doc["spec"]["podSelector"] == example["spec"]["podSelector"]


@pytest.mark.parametrize("template", ["rbac.yaml", "networkpolicy.yaml"])
def test_fixed_structure_of_simple_templates_validates(template: str) -> None:
    for doc in _rough_render((TEMPLATES / template).read_text()):
        kubernetes_validate.validate(doc, "1.37.0", strict=True)


def test_network_policy_covers_exactly_the_sandbox_pods() -> None:
    [policy] = _rough_render((TEMPLATES / "networkpolicy.yaml").read_text())
    assert policy["spec"]["podSelector"] == {"matchLabels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in policy["spec"]  # no rule: nothing is admitted
