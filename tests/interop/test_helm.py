"""The Helm chart through real Helm: ``helm lint`` and ``helm template`` with the default
values and realistic values files; every rendered object validated against the Kubernetes
schemas (kubernetes-validate) and the ClusterSPIFFEID against spire-controller-manager's own
CRD schema; ``values.schema.json`` rejections proven by ``helm template`` failing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from grantbox.demo.peers import Peers
from grantbox.drivers.kubernetes import KubernetesDriverConfig

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "grantbox"
VALUES_DIR = Path(__file__).resolve().parent / "helm-values"
# The chart's kubeVersion floor and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
NAMESPACE = "grantbox"

VALUES_FILES = sorted(p.name for p in VALUES_DIR.glob("*.yaml"))


def helm(peers: Peers, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(peers.helm), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT / ".cache" / "helm-home")},
    )


def values_args(name: str | None) -> list[str]:
    return [] if name is None else ["-f", str(VALUES_DIR / name)]


def render(peers: Peers, name: str | None, *extra: str) -> list[dict[str, Any]]:
    done = helm(
        peers, "template", "grantbox", str(CHART), "--namespace", NAMESPACE,
        *values_args(name), *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def cluster_spiffe_id_schema(peers: Peers) -> dict[str, Any]:
    crd = yaml.safe_load((peers.crds_dir / "spire.spiffe.io_clusterspiffeids.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_helm_is_the_pinned_version(peers: Peers) -> None:
    done = helm(peers, "version", "--short")
    assert done.stdout.startswith(peers.helm_version), done.stdout


@pytest.mark.parametrize("name", [None, *VALUES_FILES])
def test_helm_lint_passes(peers: Peers, name: str | None) -> None:
    done = helm(peers, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *values_args(name))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("name", [None, *VALUES_FILES])
def test_every_rendered_object_is_valid(
    peers: Peers, name: str | None, cluster_spiffe_id_schema: dict[str, Any]
) -> None:
    docs = render(peers, name)
    kinds = [doc["kind"] for doc in docs]
    assert "ConfigMap" in kinds and "Service" in kinds
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "ClusterSPIFFEID":
            assert doc["apiVersion"] == "spire.spiffe.io/v1alpha1"
            jsonschema.validate(doc, cluster_spiffe_id_schema)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name or 'defaults'}: {where} invalid for {version}: {exc}")


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def test_sqlite_runs_a_statefulset_with_a_volume(peers: Peers) -> None:
    docs = render(peers, "sqlite.yaml")
    (stateful,) = by_kind(docs, "StatefulSet")
    assert not by_kind(docs, "Deployment")
    (claim,) = stateful["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "standard"


def test_postgresql_runs_a_deployment_reading_the_url_from_a_secret(peers: Peers) -> None:
    docs = render(peers, "postgresql.yaml")
    (deployment,) = by_kind(docs, "Deployment")
    assert not by_kind(docs, "StatefulSet")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert {"name": "grantbox-database", "key": "url"} in refs


def test_csi_off_renders_no_cluster_spiffe_id(peers: Peers) -> None:
    assert by_kind(render(peers, None), "ClusterSPIFFEID")
    assert not by_kind(render(peers, "csi-off.yaml"), "ClusterSPIFFEID")


def test_the_cluster_spiffe_id_gives_sandboxes_their_ids(peers: Peers) -> None:
    (entry,) = by_kind(render(peers, "postgresql.yaml"), "ClusterSPIFFEID")
    spec = entry["spec"]
    label = '{{ index .PodMeta.Labels "grantbox.dev/sandbox-id" }}'
    assert spec["spiffeIDTemplate"] == f"spiffe://prod.example.com/grantbox/sandbox/{label}"
    assert spec["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "grantbox-sandboxes"
    }


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("database.type=mysql", "/database/type"),
        ("gateway.replicas=2", "/gateway/replicas"),
        ("gateway.port=0", "/gateway/port"),
        (
            "providerTokenGrants.spiffe.workloadApiSocketPath=/tmp/agent.sock",
            "workloadApiSocketPath",
        ),
        ("providerTokenGrants.spiffe.trustDomain=Example.ORG", "trustDomain"),
        ("sandboxes.appArmorProfile=Permissive", "appArmorProfile"),
        ("sandboxes.maxResources.memory=lots", "maxResources"),
        ("unknownKey=1", "unknownKey"),
    ],
)
def test_values_schema_rejections_fail_helm_template(
    peers: Peers, setting: str, complaint: str
) -> None:
    done = helm(
        peers, "template", "grantbox", str(CHART), "--namespace", NAMESPACE, "--set", setting
    )
    assert done.returncode != 0, f"helm accepted {setting}"
    assert "values don't meet the specifications of the schema" in done.stderr
    assert complaint in done.stderr
    assert done.stdout == ""


def test_helm_honours_the_charts_kubernetes_floor(peers: Peers) -> None:
    assert render(peers, None, "--kube-version", "1.30.0")
    done = helm(peers, "template", "grantbox", str(CHART), "--kube-version", "1.29.0")
    assert done.returncode != 0 and "kubeVersion" in done.stderr


def _driver_config(docs: list[dict[str, Any]]) -> KubernetesDriverConfig:
    (configmap,) = by_kind(docs, "ConfigMap")
    data = {k: v for k, v in configmap["data"].items() if k.startswith("GRANTBOX_K8S_")}
    return KubernetesDriverConfig.from_env(data)


def test_sandbox_sizing_reaches_the_driver(peers: Peers) -> None:
    """The chart's sandbox resources and ceilings, rendered by Helm, read by the driver."""
    defaults = _driver_config(render(peers, None))
    assert defaults.resources == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1250m", "memory": "1280Mi"},
    }
    assert (defaults.max_memory_mib, defaults.max_cpus, defaults.max_processes) == (None,) * 3
    ceilings = ["memory=8Gi", "cpu=2500m", "processes=4096"]
    setting = ",".join(f"sandboxes.maxResources.{item}" for item in ceilings)
    capped = _driver_config(render(peers, None, "--set", setting))
    assert (capped.max_memory_mib, capped.max_cpus, capped.max_processes) == (8192, 2.5, 4096)
