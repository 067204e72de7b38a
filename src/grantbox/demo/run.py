"""``grantbox demo`` from start to end: the embedded default and the three workloads on
loopback, the operator steps, the checks, and cleaning up (or, with ``keep``, leaving it
all running until Ctrl-C so the user can look around)."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .embedded import DemoDirectories, running_embedded_default
from .flow import DemoFlow, DemoOutcome, service_url
from .operator import CommandFailed, Operator
from .report import Reporter, StepFailed
from .with_keycloak import running_keycloak_services, write_keycloak_profile
from .workloads import DemoPorts, WorkloadError, find_example_dir, running_workloads

PROFILE_FILE = "provider-profile.yaml"


def profile_for_ports(profile: dict[str, Any], ports: DemoPorts, issuer_url: str) -> dict[str, Any]:
    """The demo profile moved to other ports: token endpoint and SVID audience follow the
    issuer, each service endpoint its port. The profile's shape is otherwise untouched."""
    moved: dict[str, Any] = yaml.safe_load(yaml.safe_dump(profile))
    grant = moved["credentials"][0]["token_grant"]
    grant["token_endpoint"] = f"{issuer_url}/token"
    grant["jwt_svid_audience"] = issuer_url
    for endpoint in moved["endpoints"]:
        endpoint["port"] = ports.of(endpoint["host"].split(".", 1)[0])
    return moved


def _profile_file(example_dir: Path, ports: DemoPorts, issuer_url: str, work: Path) -> Path:
    original = example_dir / PROFILE_FILE
    if ports == DemoPorts():
        return original
    data = profile_for_ports(yaml.safe_load(original.read_text()), ports, issuer_url)
    moved = work / PROFILE_FILE
    moved.write_text(yaml.safe_dump(data, sort_keys=False))
    return moved


def run_demo(
    *,
    keep: bool = False,
    ports: DemoPorts | None = None,
    root: Path | None = None,
    report: Reporter | None = None,
    issuer: str = "embedded",
) -> int:
    """Run the demo; 0 only when every check passed. ``issuer`` is the token service:
    ``embedded`` (the demo's own issuer) or ``keycloak`` (real Keycloak from ``make peers``)."""
    report = report or Reporter()
    ports = ports or DemoPorts()
    directories = DemoDirectories(root or Path(tempfile.mkdtemp(prefix="grantbox-demo-")))
    outcome = DemoOutcome()
    failure = ""
    with contextlib.ExitStack() as running:
        try:
            with report.step("start the embedded default (grantbox up)"):
                embedded = running.enter_context(running_embedded_default(directories))
            identity = embedded.identity
            assert identity is not None
            report.note(
                f"trust domain {identity.trust_domain}, OIDC discovery at {identity.oidc_url}"
            )
            example_dir = find_example_dir()
            if issuer == "keycloak":
                with report.step("start Keycloak (trusting the identity agent), alpha and beta"):
                    services = running.enter_context(
                        running_keycloak_services(
                            identity, directories.logs, directories.root, ports=ports
                        )
                    )
                report.note(f"Keycloak realm {services.realm_url}")
                profile = write_keycloak_profile(
                    example_dir, ports, services.keycloak, directories.root
                )
                flow = DemoFlow(
                    Operator(directories.environment()),
                    services,
                    identity,
                    profile,
                    report,
                    ports=ports,
                    register=services.register,
                    checks=services.answer_checks,
                )
            else:
                with report.step("start the token issuer, alpha and beta on loopback"):
                    workloads = running.enter_context(
                        running_workloads(identity, directories.logs, ports=ports)
                    )
                profile = _profile_file(example_dir, ports, workloads.issuer_url, directories.root)
                flow = DemoFlow(
                    Operator(directories.environment()),
                    workloads,
                    identity,
                    profile,
                    report,
                    ports=ports,
                )
            try:
                outcome = flow.run()
            finally:
                if not keep:
                    with contextlib.suppress(StepFailed):
                        flow.cleanup()
            report.console.print("[bold]checks[/]")
            report.checks(outcome.checks)
            if keep:
                _keep_running(report, directories, ports, embedded.wait)
        except (WorkloadError, CommandFailed, StepFailed) as exc:
            failure = str(exc).splitlines()[0]
        except KeyboardInterrupt:
            failure = "interrupted"
    return _finish(report, outcome, failure, directories, keep)


def _keep_running(
    report: Reporter, directories: DemoDirectories, ports: DemoPorts, wait: Any
) -> None:
    config = shlex.quote(str(directories.config))
    report.console.print(
        "[bold]kept running[/] (sandbox, provider and profile stay). In another shell:\n"
        f"  export GRANTBOX_CONFIG_DIR={config}\n"
        f"  grantbox sandbox exec --name demo -- curl -s {service_url('alpha', ports)}\n"
        "Press Ctrl-C here to stop everything."
    )
    with contextlib.suppress(KeyboardInterrupt):
        wait()


def _finish(
    report: Reporter, outcome: DemoOutcome, failure: str, directories: DemoDirectories, keep: bool
) -> int:
    if outcome.ok and not failure:
        report.console.print(
            "[bold green]demo passed[/]: alpha and beta each received a token minted from "
            f"the sandbox's own identity ({outcome.spiffe_id}); no secret was stored anywhere."
        )
        if not keep:
            shutil.rmtree(directories.root, ignore_errors=True)
        return 0
    failed = [check.name for check in outcome.checks if not check.ok]
    reason = failure or f"{len(failed)} check(s) failed: {'; '.join(failed)}"
    report.console.print(f"[bold red]demo failed[/]: {reason}")
    report.console.print(f"logs are kept in {directories.logs}")
    return 1
