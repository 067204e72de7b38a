"""The demo's operator steps, once a gateway and the three workloads are running: import
the profile, create a provider with run-time credentials and a sandbox, ``curl`` alpha and
beta from inside the sandbox, and check what the services received and logged.

Everything goes through the ``grantbox`` command line, as a user would type it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from grantbox.drivers.protocol import sandbox_spiffe_path

from .checks import Check, check_answer, check_proof_of_life, proofs_of_life, service_claims
from .operator import CommandFailed, Operator
from .probe import HttpProbe, curl_argv, parse_curl_output
from .report import Reporter, StepFailed
from .workloads import SERVICES, DemoPorts, IdentitySettings, WorkloadProcess

SERVICE_HOST = "{service}.localhost"
PROBE_PATH = "/hello"


@dataclass(frozen=True)
class DemoNames:
    profile_id: str = "spiffe-token-grant-demo"
    provider: str = "spiffe-demo"
    sandbox: str = "demo"


@dataclass(frozen=True)
class ProbePolicy:
    """How patiently the sandbox's curl is retried while the sandbox settles."""

    attempts: int = 12
    interval: float = 2.0
    timeout: float = 10.0


@dataclass
class DemoOutcome:
    sandbox_id: str = ""
    spiffe_id: str = ""
    answers: dict[str, HttpProbe] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)


def service_url(service: str, ports: DemoPorts) -> str:
    """The URL the sandbox asks for: the profile's endpoint host, so the proxy's binding
    for that host (and no other) supplies the token."""
    return f"http://{SERVICE_HOST.format(service=service)}:{ports.of(service)}{PROBE_PATH}"


def sandbox_spiffe_id(trust_domain: str, sandbox_id: str) -> str:
    return f"spiffe://{trust_domain}{sandbox_spiffe_path(sandbox_id)}"


AnswerChecks = Callable[[str, str, str], list[Check]]
"""Checks on one service's answer body: ``(service, body, sandbox SPIFFE ID)``."""


class Services(Protocol):
    """The protected services whose logs hold the proof-of-life lines."""

    def service(self, name: str) -> WorkloadProcess: ...


def answer_checks(
    service: str, probe: HttpProbe, spiffe_id: str, checks: AnswerChecks = check_answer
) -> list[Check]:
    status = Check(f"{service}: answered 200", probe.status == 200, f"status={probe.status}")
    return [status, *checks(service, probe.body, spiffe_id)]


class DemoFlow:
    def __init__(
        self,
        operator: Operator,
        workloads: Services,
        identity: IdentitySettings,
        profile_file: Path,
        report: Reporter,
        *,
        names: DemoNames | None = None,
        ports: DemoPorts | None = None,
        probe: ProbePolicy | None = None,
        sandbox_policy: Path | None = None,
        ready_timeout: float = 90.0,
        sleep: Callable[[float], None] = time.sleep,
        register: Callable[[str], None] | None = None,
        checks: AnswerChecks = check_answer,
    ) -> None:
        self.operator = operator
        self.workloads = workloads
        self.identity = identity
        self.profile_file = profile_file
        self.report = report
        self.names = names or DemoNames()
        self.ports = ports or DemoPorts()
        self.probe_policy = probe or ProbePolicy()
        self.sandbox_policy = sandbox_policy
        self.ready_timeout = ready_timeout
        self._sleep = sleep
        self._register = register
        self._checks = checks

    def run(self) -> DemoOutcome:
        outcome = DemoOutcome()
        self.configure()
        sandbox_id = outcome.sandbox_id = self.create_sandbox()
        outcome.spiffe_id = sandbox_spiffe_id(self.identity.trust_domain, sandbox_id)
        self.report.note(f"the sandbox's identity: {outcome.spiffe_id}")
        if self._register is not None:
            with self.report.step("register the sandbox's identity with the token service"):
                self._register(outcome.spiffe_id)
        for service in SERVICES:
            with self.report.step(f"curl {service_url(service, self.ports)} inside the sandbox"):
                probe = self.probe(service)
            outcome.answers[service] = probe
            if probe.status == 200:
                self.report.claims(service, probe.status, service_claims(probe.body))
            else:  # e.g. the proxy's token_grant_failed answer, which names the reason
                self.report.note(f"{service} answered {probe.status}: {probe.body.strip()[:500]}")
            outcome.checks += answer_checks(service, probe, outcome.spiffe_id, self._checks)
        for service in SERVICES:
            lines = self.workloads.service(service).log_lines()
            shown = [line for line in lines if proofs_of_life([line], service)]
            self.report.proof_of_life(service, shown)
            outcome.checks.append(check_proof_of_life(service, lines, outcome.spiffe_id))
        return outcome

    def configure(self) -> None:
        profile = str(self.profile_file)
        with self.report.step(f"lint and import the profile {self.names.profile_id}"):
            self.operator.run("profile", "lint", "-f", profile)
            self.operator.run("profile", "import", "-f", profile)
        with self.report.step(
            f"create provider {self.names.provider} with run-time credentials (no secret)"
        ):
            self.operator.run(
                "provider", "create", "--name", self.names.provider,
                "--type", self.names.profile_id, "--runtime-credentials",
            )  # fmt: skip

    def create_sandbox(self) -> str:
        """Create the sandbox and wait until its supervisor reports ready; returns its id."""
        with self.report.step(f"create sandbox {self.names.sandbox} and wait until ready"):
            policy = ["--policy", str(self.sandbox_policy)] if self.sandbox_policy else []
            created = self.operator.json(
                "sandbox", "create", "--name", self.names.sandbox,
                "--provider", self.names.provider, *policy, "--", "sleep", "infinity",
            )  # fmt: skip
            sandbox_id = str(created["id"])
            deadline = time.monotonic() + self.ready_timeout
            while True:
                state: dict[str, Any] = self.operator.json("sandbox", "get", self.names.sandbox)
                if state.get("phase") == "ready":
                    return sandbox_id
                if state.get("phase") == "error":
                    raise StepFailed(f"sandbox failed: {state.get('phase_reason')}")
                if time.monotonic() > deadline:
                    raise StepFailed(
                        f"sandbox not ready after {self.ready_timeout:g}s "
                        f"(phase {state.get('phase')}: {state.get('phase_reason')})"
                    )
                self._sleep(0.5)

    def probe(self, service: str) -> HttpProbe:
        """curl the service from inside the sandbox until it answers 200 (or attempts end)."""
        policy = self.probe_policy
        command = curl_argv(service_url(service, self.ports), policy.timeout)
        probe = HttpProbe(0, "")
        for attempt in range(1, policy.attempts + 1):
            result = self.operator.exec_in(self.names.sandbox, command, policy.timeout + 5)
            probe = parse_curl_output(result.stdout)
            if probe.status == 200:
                return probe
            if probe.status == 0:  # no HTTP answer: curl's or exec's own words say why
                probe = HttpProbe(0, f"{result.stdout}{result.stderr}".strip())
            if attempt < policy.attempts:
                self._sleep(policy.interval)
        return probe

    def cleanup(self) -> None:
        """Delete what the demo created, newest first; report but survive failures."""
        with self.report.step("clean up the sandbox, provider and profile"):
            failures = []
            for args in (
                ("sandbox", "delete", self.names.sandbox),
                ("provider", "delete", self.names.provider),
                ("profile", "delete", self.names.profile_id),
            ):
                try:
                    self.operator.run(*args)
                except CommandFailed as exc:
                    failures.append(str(exc))
            if failures:
                raise StepFailed("; ".join(failures))
