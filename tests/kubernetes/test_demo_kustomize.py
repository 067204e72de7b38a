"""``kubectl kustomize examples/spiffe-token-grant-demo/k8s``, validated against the schema."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEMO = Path(__file__).resolve().parents[2] / "examples" / "spiffe-token-grant-demo" / "k8s"
KUBECTL = shutil.which("kubectl")

pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed (scripts/bootstrap.sh installs it)"
)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    assert DEMO.is_dir(), f"{DEMO} is missing"
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(DEMO)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_every_rendered_object_validates_against_the_kubernetes_schema(
    rendered: list[dict[str, Any]],
) -> None:
    assert rendered
    for obj in rendered:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, "1.37.0", strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_issuer_alpha_and_beta_are_deployments_with_services(
    rendered: list[dict[str, Any]],
) -> None:
    by_kind: dict[str, set[str]] = {}
    for obj in rendered:
        by_kind.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
    deployments = by_kind.get("Deployment", set())
    services = by_kind.get("Service", set())
    assert {"alpha", "beta"} <= deployments and {"alpha", "beta"} <= services
    assert any("issuer" in name for name in deployments)
    assert any("issuer" in name for name in services)


def test_services_select_their_deployments(rendered: list[dict[str, Any]]) -> None:
    pod_labels = [
        obj["spec"]["template"]["metadata"].get("labels", {})
        for obj in rendered
        if obj["kind"] == "Deployment"
    ]
    for service in (obj for obj in rendered if obj["kind"] == "Service"):
        selector = service["spec"].get("selector") or {}
        assert selector, f"Service {service['metadata']['name']} selects nothing"
        matching = [labels for labels in pod_labels if selector.items() <= labels.items()]
        assert len(matching) == 1, f"Service {service['metadata']['name']} selects {matching}"
