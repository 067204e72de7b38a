"""The Kubernetes manifests of the demo workloads build with kustomize and agree with the
scripts they run, the cluster profile, and the image they run from."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import issuer
import pytest
import service
import yaml

from grantbox.profiles import expand_bindings, has_errors, load_file, validate_profile
from tests.demo.conftest import EXAMPLE_DIR

K8S = EXAMPLE_DIR / "k8s"


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    built = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    )
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def resolved_args(deployment: dict[str, Any], settings: dict[str, str]) -> list[str]:
    """The container's args with ``$(VAR)`` expanded the way the kubelet does."""
    return [
        re.sub(r"\$\((\w+)\)", lambda m: settings[m.group(1)], arg)
        for arg in container(deployment)["args"]
    ]


@pytest.fixture(scope="module")
def settings(objects: list[dict[str, Any]]) -> dict[str, str]:
    (config_map,) = by_kind(objects, "ConfigMap").values()
    data: dict[str, str] = config_map["data"]
    return data


def test_kustomize_builds_three_workloads(objects: list[dict[str, Any]]) -> None:
    assert sorted(by_kind(objects, "Deployment")) == ["alpha", "beta", "token-issuer"]
    assert sorted(by_kind(objects, "Service")) == ["alpha", "beta", "token-issuer"]
    (config_map_name,) = by_kind(objects, "ConfigMap")
    for deployment in by_kind(objects, "Deployment").values():
        spec = container(deployment)
        assert spec["image"] == "grantbox-demo-workloads:dev"
        assert spec["envFrom"][0]["configMapRef"]["name"] == config_map_name


def test_each_deployment_runs_a_script_with_arguments_it_accepts(
    objects: list[dict[str, Any]], settings: dict[str, str]
) -> None:
    deployments = by_kind(objects, "Deployment")
    issuer_args = resolved_args(deployments["token-issuer"], settings)
    assert issuer_args[0] == "issuer.py" and (EXAMPLE_DIR / "issuer.py").is_file()
    parsed = issuer.parse_args(issuer_args[1:])
    assert parsed.issuer == settings["ISSUER_ID"]
    assert parsed.trust_domain == settings["TRUST_DOMAIN"]
    for name in ("alpha", "beta"):
        args = resolved_args(deployments[name], settings)
        assert args[0] == "service.py"
        parsed_service = service.parse_args(args[1:])
        assert parsed_service.name == name
        assert parsed_service.issuer == settings["ISSUER_ID"]
        assert urlsplit(parsed_service.issuer_jwks).hostname == "token-issuer"


def test_services_reach_the_port_each_workload_listens_on(objects: list[dict[str, Any]]) -> None:
    services = by_kind(objects, "Service")
    for name, deployment in by_kind(objects, "Deployment").items():
        spec = container(deployment)
        listen = spec["args"][spec["args"].index("--listen") + 1]
        (port,) = spec["ports"]
        assert int(listen.rsplit(":", 1)[1]) == port["containerPort"]
        (service_port,) = services[name]["spec"]["ports"]
        assert service_port["targetPort"] == port["name"]
        assert services[name]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_workloads_run_unprivileged(objects: list[dict[str, Any]]) -> None:
    for deployment in by_kind(objects, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        security = container(deployment)["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]


def test_cluster_profile_points_at_the_manifests(
    objects: list[dict[str, Any]], settings: dict[str, str]
) -> None:
    result = load_file(K8S / "provider-profile.yaml")
    (loaded,) = result.profiles
    assert not result.diagnostics and not has_errors(validate_profile(loaded.profile))
    services = by_kind(objects, "Service")
    bindings = expand_bindings([("demo", loaded.profile)]).bindings
    assert {b.audience for b in bindings} == {"alpha", "beta"}
    for binding in bindings:
        assert binding.svid_audience == settings["ISSUER_ID"]
        assert binding.token_endpoint == settings["ISSUER_ID"] + "/token"
        service_name = binding.host.split(".")[0]
        assert service_name == binding.audience
        assert binding.port in (0, services[service_name]["spec"]["ports"][0]["port"])
    issuer_host = urlsplit(settings["ISSUER_ID"]).hostname or ""
    assert issuer_host.split(".")[0] in services


def test_image_holds_every_module_and_pinned_requirement() -> None:
    dockerfile = (EXAMPLE_DIR / "Dockerfile").read_text()
    assert "COPY *.py ./" in dockerfile
    assert "requirements.txt" in dockerfile
    pins = [
        line.split("==")
        for line in (EXAMPLE_DIR / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    names = {re.sub(r"\[.*\]", "", name).lower() for name, _ in pins}
    for name, version in pins:
        assert importlib.metadata.version(re.sub(r"\[.*\]", "", name)) == version, name
    imported = set()
    for script in EXAMPLE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    local = {p.stem for p in EXAMPLE_DIR.glob("*.py")}
    third_party = {"jwt", "httpx", "starlette", "uvicorn", "spiffe", "cryptography"}
    stdlib_or_local = imported - third_party
    assert all(name in local or _is_stdlib(name) for name in stdlib_or_local), stdlib_or_local
    assert {"pyjwt", "httpx", "starlette", "uvicorn", "spiffe", "cryptography"} <= names


def _is_stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names or name == "__future__"


def test_manifest_files_are_all_listed() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "provider-profile.yaml"}
    assert listed == on_disk
