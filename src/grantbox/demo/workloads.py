"""Starting the three demo workloads (token issuer, alpha, beta) as real child processes
on loopback, waiting until each serves, and keeping their output for the proof-of-life
checks.

Each workload prints ``<name>: listening on <url>`` once it serves; that line is how the
port is learnt when the kernel chose it (port 0), so tests never race for free ports.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

EXAMPLE_DIR_ENV = "GRANTBOX_DEMO_DIR"
EXAMPLE_RELATIVE = Path("examples") / "spiffe-token-grant-demo"
SERVICES = ("alpha", "beta")
DEFAULT_PATH_PREFIX = "/grantbox/sandbox/"
_LISTENING = re.compile(r"\b(?P<name>[\w.-]+): listening on (?P<url>http://\S+)\s*$")


class WorkloadError(Exception):
    """A demo workload did not start or did not become ready; the message says why."""


def find_example_dir(start: Path | None = None) -> Path:
    """The demo's directory: ``$GRANTBOX_DEMO_DIR``, else ``examples/…`` in a checkout
    above this package (the demo runs from a clone of the repository)."""
    override = os.environ.get(EXAMPLE_DIR_ENV)
    candidates = [Path(override)] if override else []
    here = (start or Path(__file__)).resolve()
    candidates += [parent / EXAMPLE_RELATIVE for parent in here.parents]
    candidates.append(Path.cwd() / EXAMPLE_RELATIVE)
    for candidate in candidates:
        if (candidate / "issuer.py").is_file() and (candidate / "service.py").is_file():
            return candidate
    raise WorkloadError(
        f"cannot find the demo workloads ({EXAMPLE_RELATIVE}); run from a grantbox checkout "
        f"or set {EXAMPLE_DIR_ENV}"
    )


@dataclass(frozen=True)
class DemoPorts:
    """Loopback ports of the three workloads; 0 lets the kernel choose (tests)."""

    issuer: int = 18080
    alpha: int = 18081
    beta: int = 18082

    @classmethod
    def any(cls) -> DemoPorts:
        return cls(0, 0, 0)

    def of(self, service: str) -> int:
        return {"alpha": self.alpha, "beta": self.beta}[service]


@dataclass(frozen=True)
class IdentitySettings:
    """Where the issuer finds the trust domain's keys, and whose SVIDs it accepts."""

    oidc_url: str
    trust_domain: str
    path_prefix: str = DEFAULT_PATH_PREFIX


def last_line(lines: Sequence[str]) -> str:
    """The last non-empty line of a log: usually the error that ended the process."""
    for line in reversed(lines):
        if line.strip():
            return line.strip()
    return "no output"


def listening_url(lines: Sequence[str], name: str) -> str | None:
    """The URL announced by a workload's readiness line, if it was printed yet."""
    for line in lines:
        match = _LISTENING.search(line)
        if match and match.group("name") == name:
            return match.group("url")
    return None


class WorkloadProcess:
    """One workload as a child process whose stdout and stderr go to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    def __repr__(self) -> str:
        pid = self._process.pid if self._process else None
        return f"WorkloadProcess(name={self.name!r}, pid={pid}, url={self._url!r})"

    @property
    def url(self) -> str:
        if self._url is None:
            raise WorkloadError(f"{self.name} is not ready")
        return self._url

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        if self._process is not None:
            raise WorkloadError(f"{self.name} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_lines(self) -> list[str]:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return text.splitlines()

    def log_tail(self, count: int = 20) -> str:
        return "\n".join(self.log_lines()[-count:])

    def wait_ready(self, timeout: float = 20.0) -> str:
        """Wait for the readiness line, then for ``GET /healthz`` to answer 200."""
        deadline = time.monotonic() + timeout
        while self._url is None:
            self._url = listening_url(self.log_lines(), self.name)
            if self._url is None:
                self._check_alive()
                self._check_deadline(deadline, "announce its address")
                time.sleep(0.05)
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            while True:
                self._check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{self._url}/healthz").status_code == 200:
                        return self._url
                self._check_deadline(deadline, "answer /healthz")
                time.sleep(0.05)

    def _check_alive(self) -> None:
        if self._process is None:
            raise WorkloadError(f"{self.name} was not started")
        code = self._process.poll()
        if code is not None:
            raise WorkloadError(
                f"{self.name} exited with status {code} before it was ready "
                f"({last_line(self.log_lines())}):\n{self.log_tail()}"
            )

    def _check_deadline(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise WorkloadError(f"{self.name} did not {what} in time:\n{self.log_tail()}")

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode


@dataclass
class DemoWorkloads:
    """The three running workloads."""

    issuer: WorkloadProcess
    alpha: WorkloadProcess
    beta: WorkloadProcess

    @property
    def issuer_url(self) -> str:
        return self.issuer.url

    @property
    def token_url(self) -> str:
        return f"{self.issuer.url}/token"

    def service(self, name: str) -> WorkloadProcess:
        if name == "alpha":
            return self.alpha
        if name == "beta":
            return self.beta
        raise KeyError(name)

    def all(self) -> tuple[WorkloadProcess, ...]:
        return (self.issuer, self.alpha, self.beta)

    def issuer_stats(self) -> dict[str, Any]:
        """The issuer's own counters: ``token_requests`` and ``issued``."""
        with httpx.Client(trust_env=False, timeout=5.0) as http:
            response = http.get(f"{self.issuer.url}/stats")
            response.raise_for_status()
            stats: dict[str, Any] = response.json()
            return stats

    def stop(self) -> None:
        for workload in reversed(self.all()):
            workload.stop()


def issuer_argv(
    python: str,
    example_dir: Path,
    host: str,
    port: int,
    identity: IdentitySettings,
    *,
    jwks_min_refresh: float | None = None,
) -> list[str]:
    argv = [
        python,
        str(example_dir / "issuer.py"),
        "--listen",
        _listen(host, port),
        "--oidc-discovery",
        identity.oidc_url,
        "--trust-domain",
        identity.trust_domain,
        "--path-prefix",
        identity.path_prefix,
        "--parent-pid",
        str(os.getpid()),
    ]
    if jwks_min_refresh is not None:
        argv += ["--jwks-min-refresh", str(jwks_min_refresh)]
    return argv


def service_argv(
    python: str, example_dir: Path, name: str, host: str, port: int, issuer_url: str
) -> list[str]:
    return [
        python,
        str(example_dir / "service.py"),
        "--name",
        name,
        "--listen",
        _listen(host, port),
        "--issuer-jwks",
        f"{issuer_url}/jwks",
        "--parent-pid",
        str(os.getpid()),
    ]


def _listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def workload_environment() -> dict[str, str]:
    """The workloads' environment: ours minus proxy settings (they talk to loopback)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def running_workloads(
    identity: IdentitySettings,
    log_dir: Path,
    *,
    ports: DemoPorts | None = None,
    host: str = "127.0.0.1",
    example_dir: Path | None = None,
    python: str = sys.executable,
    jwks_min_refresh: float | None = None,
    ready_timeout: float = 20.0,
) -> Iterator[DemoWorkloads]:
    """Start issuer, then alpha and beta (which need the issuer's URL); stop all on exit."""
    ports = ports or DemoPorts()
    directory = example_dir or find_example_dir()
    env = workload_environment()
    issuer = WorkloadProcess(
        "issuer",
        issuer_argv(
            python, directory, host, ports.issuer, identity, jwks_min_refresh=jwks_min_refresh
        ),
        log_dir / "issuer.log",
        env=env,
    )
    started: list[WorkloadProcess] = []
    try:
        issuer.start()
        started.append(issuer)
        issuer.wait_ready(ready_timeout)
        services = []
        for name in SERVICES:
            service = WorkloadProcess(
                name,
                service_argv(python, directory, name, host, ports.of(name), issuer.url),
                log_dir / f"{name}.log",
                env=env,
            )
            service.start()
            started.append(service)
            services.append(service)
        for service in services:
            service.wait_ready(ready_timeout)
        yield DemoWorkloads(issuer=issuer, alpha=services[0], beta=services[1])
    finally:
        for workload in reversed(started):
            workload.stop()
