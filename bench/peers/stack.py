"""Everything the comparison runs against, started once and stopped at the end.

One nginx serves the 1 KiB body on a separate loopback port per route (direct, each
proxy, plain and TLS), so its access log tells afterwards which route delivered which
request and with which ``Authorization`` header. In front of it: squid, tinyproxy,
mitmproxy, and grantbox as ``grantbox proxy run`` with a real grant (``grantbox identity
serve`` for the JWT-SVID, the loopback token endpoint of :mod:`bench.peers.issuer` for the
token) and, where this machine can run sandboxes, grantbox's sandbox path (``grantbox up``,
a provider whose profile binds nginx, a sandbox running wrk through its own proxy).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme
import yaml

from grantbox.demo import CommandFailed, Operator, WorkloadError
from grantbox.demo.embedded import DemoDirectories, EmbeddedDefault

from . import configs
from .install import REPO, mitmdump, program
from .processes import (
    Service,
    ServiceFailed,
    cpu_seconds,
    find_processes,
    free_port,
    parent_pid,
    process_tree,
    run_tool,
)
from .wrk import lua_script, wrk_argv

GRANTBOX = str(Path(sys.executable).with_name("grantbox"))
TRUST_DOMAIN = "bench.example"
GRANTBOX_HOST = "bench.localhost"  # a name the policy binds; answered by grantbox itself
PEER_HOST = "127.0.0.1"  # the other proxies get an address: no lookup at all
TLS_HOST = "localhost"  # a name for certificates and SNI, the same on every TLS route
SANDBOX = "bench"
SANDBOX_PROFILE = "bench-nginx"

HTTP_ROUTES = (
    "direct",
    "squid",
    "tinyproxy",
    "mitmproxy",
    "grantbox",
    "grantbox-workers",
    "sandbox",
)
TLS_ROUTES = ("direct", "squid", "mitmproxy", "grantbox", "grantbox-workers")

WrkRunner = Callable[[str, float], str]  # (Lua script, seconds) -> wrk's output


def no_header(value: str) -> bool:
    return value in ("", "-")


def exactly(expected: str) -> Callable[[str], bool]:
    return lambda value: value == expected


def issued_token(value: str) -> bool:
    """A token from the bench's token endpoint (``gbx<serial>.<random>``), not a static one."""
    return value.startswith("Bearer gbx") and "static" not in value


@dataclass
class Route:
    """One way to reach nginx's 1 KiB body: directly or through one proxy."""

    key: str
    label: str
    port: int  # nginx's port for this route (its lines in the access log)
    host: str  # the host the client asks for
    proxy: str | None  # the proxy's URL for a client on this machine
    expect: Callable[[str], bool]  # is this Authorization value proof of the proxy's work?
    service: Service | None = None  # the proxy's process (for memory)
    run_wrk: WrkRunner | None = None  # how wrk runs on this route
    cafile: Path | None = None  # TLS routes: the CA the client must trust
    # The processes whose CPU is this route's proxy cost, by part (None: no proxy).
    cpu_parts: Callable[[], dict[str, list[int]]] | None = None

    def cpu_seconds(self) -> dict[str, float]:
        parts = self.cpu_parts() if self.cpu_parts is not None else {}
        if not parts and self.service is not None:
            parts = {self.key: process_tree(self.service.pid)}
        return {part: cpu_seconds(pids) for part, pids in parts.items()}

    @property
    def url(self) -> str:
        scheme = "https" if self.cafile is not None else "http"
        return f"{scheme}://{self.host}:{self.port}{configs.BODY_PATH}"

    def wrk_script(self) -> str:
        if self.key == "direct":
            return lua_script(configs.BODY_PATH)
        return lua_script(self.url, f"{self.host}:{self.port}")


@dataclass(frozen=True)
class Certs:
    upstream_ca: Path  # signs nginx's certificate; every proxy trusts it upstream
    server: Path  # nginx's chain and key
    squid_ca: Path
    squid_key: Path


class Stack:
    """The started servers and the routes through them; a context manager that stops all."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.http_ports = {key: free_port() for key in HTTP_ROUTES}
        self.tls_ports = {key: free_port() for key in TLS_ROUTES}
        self.http: dict[str, Route] = {}
        self.tls: dict[str, Route] = {}
        self.nginx: Service | None = None
        self.issuers: dict[str, Service] = {}
        self._root = os.geteuid() == 0
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit.close()

    def stop(self) -> None:
        self._exit.close()

    # -- helpers ------------------------------------------------------------------------
    def _start(self, service: Service) -> Service:
        service.start()
        self._exit.callback(service.stop)
        return service

    def _dir(self, name: str, owner: str | None = None) -> Path:
        path = self.run_dir / name
        path.mkdir(parents=True, exist_ok=True)
        if owner is not None and self._root:
            entry = pwd.getpwnam(owner)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return path

    def _host_wrk(self, name: str, target: str) -> WrkRunner:
        """wrk on this machine, connecting to ``target`` (nginx itself or a proxy)."""
        script_path = self.run_dir / f"wrk-{name}.lua"

        def run(script: str, seconds: float) -> str:
            script_path.write_text(script)
            argv = wrk_argv(target, str(script_path), seconds)
            return run_tool([program("wrk"), *argv[1:]], seconds + 60)

        return run

    # -- the servers --------------------------------------------------------------------
    def certificates(self) -> Certs:
        """Throwaway CAs for this run (trustme), written into the run directory."""
        folder = self._dir("certs")
        upstream = trustme.CA(organization_name="grantbox bench upstream")
        leaf = upstream.issue_cert(TLS_HOST, GRANTBOX_HOST, PEER_HOST)
        squid = trustme.CA(organization_name="grantbox bench squid")
        certs = Certs(
            upstream_ca=folder / "upstream-ca.pem",
            server=folder / "nginx.pem",
            squid_ca=folder / "squid-ca.pem",
            squid_key=folder / "squid-ca.key",
        )
        upstream.cert_pem.write_to_path(str(certs.upstream_ca))
        leaf.private_key_and_cert_chain_pem.write_to_path(str(certs.server))
        squid.cert_pem.write_to_path(str(certs.squid_ca))
        squid.private_key_pem.write_to_path(str(certs.squid_key))
        for public in (certs.upstream_ca, certs.squid_ca):
            public.chmod(0o644)
        for secret in (certs.server, certs.squid_key):  # throwaway, but still keys
            secret.chmod(0o600)
        return certs

    def start_nginx(self, certs: Certs) -> None:
        folder = self._dir("nginx")
        www = self._dir("nginx/www")
        (www / configs.BODY_PATH.lstrip("/")).write_bytes(b"x" * configs.BODY_SIZE)
        sites = [configs.NginxSite(port) for port in self.http_ports.values()]
        sites += [configs.NginxSite(port, tls=True) for port in self.tls_ports.values()]
        conf = folder / "nginx.conf"
        conf.write_text(
            configs.nginx_conf(
                folder,
                sites,
                cert=certs.server,
                key=certs.server,
                user="nobody nogroup" if self._root else None,
            )
        )
        argv = [program("nginx"), "-c", str(conf), "-e", str(folder / "nginx-error.log")]
        # SIGQUIT is nginx's graceful stop: it flushes the buffered access log.
        nginx = Service("nginx", argv, folder / "nginx.out", stop_signal=signal.SIGQUIT)
        self.nginx = self._start(nginx)
        for port in [*self.http_ports.values(), *self.tls_ports.values()]:
            nginx.wait_port(port)
        port = self.http_ports["direct"]
        self.http["direct"] = Route(
            "direct", "nginx, direct", port, PEER_HOST, None, no_header,
            run_wrk=self._host_wrk("direct", f"http://{PEER_HOST}:{port}"),
        )  # fmt: skip
        self.tls["direct"] = Route(
            "direct", "nginx, direct", self.tls_ports["direct"], TLS_HOST, None, no_header,
            cafile=certs.upstream_ca,
        )  # fmt: skip

    def access_log(self) -> Path:
        return self.run_dir / "nginx" / "access.log"

    def start_squid(self, certs: Certs) -> None:
        folder = self._dir("squid", owner="proxy")
        copies = []
        for source in (certs.squid_ca, certs.squid_key):
            copy = folder / source.name
            copy.write_bytes(source.read_bytes())
            copy.chmod(0o600)
            if self._root:
                os.chown(copy, pwd.getpwnam("proxy").pw_uid, -1)
            copies.append(copy)
        certgen = ["/usr/lib/squid/security_file_certgen", "-c", "-s", str(folder / "ssl_db")]
        if self._root:  # the database must belong to the user squid runs its helpers as
            certgen = ["setpriv", "--reuid=proxy", "--regid=proxy", "--clear-groups", *certgen]
        run_tool([*certgen, "-M", "4MB"], 30)
        plain, bump = free_port(), free_port()
        conf = folder / "squid.conf"
        conf.write_text(
            configs.squid_conf(
                folder,
                http_port=plain,
                bump_port=bump,
                ca_cert=copies[0],
                ca_key=copies[1],
                upstream_ca=certs.upstream_ca,
                user="proxy" if self._root else None,
            )
        )
        squid = Service("squid", [program("squid"), "-N", "-f", str(conf)], folder / "squid.out")
        self._start(squid)
        squid.wait_port(plain)
        squid.wait_port(bump)
        expect = exactly(configs.static_token("squid"))
        self.http["squid"] = Route(
            "squid", "squid (request_header_add)", self.http_ports["squid"], PEER_HOST,
            f"http://127.0.0.1:{plain}", expect, service=squid,
            run_wrk=self._host_wrk("squid", f"http://127.0.0.1:{plain}"),
        )  # fmt: skip
        self.tls["squid"] = Route(
            "squid", "squid (ssl-bump)", self.tls_ports["squid"], TLS_HOST,
            f"http://127.0.0.1:{bump}", expect, service=squid, cafile=certs.squid_ca,
        )  # fmt: skip

    def start_tinyproxy(self) -> None:
        folder = self._dir("tinyproxy", owner="nobody")
        port = free_port()
        conf = folder / "tinyproxy.conf"
        conf.write_text(
            configs.tinyproxy_conf(
                folder,
                port=port,
                user="nobody" if self._root else None,
                group="nogroup" if self._root else None,
            )
        )
        argv = [program("tinyproxy"), "-d", "-c", str(conf)]
        tinyproxy = self._start(Service("tinyproxy", argv, folder / "tinyproxy.out"))
        tinyproxy.wait_port(port)
        self.http["tinyproxy"] = Route(
            "tinyproxy", "tinyproxy (AddHeader)", self.http_ports["tinyproxy"], PEER_HOST,
            f"http://127.0.0.1:{port}", exactly(configs.static_token("tinyproxy")),
            service=tinyproxy, run_wrk=self._host_wrk("tinyproxy", f"http://127.0.0.1:{port}"),
        )  # fmt: skip

    def start_mitmproxy(self, certs: Certs) -> None:
        folder = self._dir("mitmproxy")
        addon = folder / "add_header.py"
        addon.write_text(configs.mitmproxy_addon())
        port = free_port()
        argv = [
            str(mitmdump()), "--quiet",
            "--listen-host", "127.0.0.1", "--listen-port", str(port),
            "--scripts", str(addon),
            "--set", f"confdir={folder / 'conf'}",
            "--set", f"ssl_verify_upstream_trusted_ca={certs.upstream_ca}",
        ]  # fmt: skip
        mitm = self._start(Service("mitmproxy", argv, folder / "mitmproxy.out"))
        mitm.wait_port(port, timeout=60)
        proxy = f"http://127.0.0.1:{port}"
        expect = exactly(configs.static_token("mitmproxy"))
        self.http["mitmproxy"] = Route(
            "mitmproxy", "mitmproxy (requestheaders addon)", self.http_ports["mitmproxy"],
            PEER_HOST, proxy, expect, service=mitm, run_wrk=self._host_wrk("mitmproxy", proxy),
        )  # fmt: skip
        self.tls["mitmproxy"] = Route(
            "mitmproxy", "mitmproxy", self.tls_ports["mitmproxy"], TLS_HOST, proxy, expect,
            service=mitm, cafile=folder / "conf" / "mitmproxy-ca-cert.pem",
        )  # fmt: skip

    def _issuer(self, name: str, oidc_url: str, trust_domain: str) -> str:
        """A token endpoint trusting ``oidc_url``'s keys; returns its token URL."""
        argv = [
            sys.executable, "-m", "bench.peers.issuer",
            "--oidc", oidc_url, "--trust-domain", trust_domain,
        ]  # fmt: skip
        issuer = self._start(Service(name, argv, self._dir(name) / "issuer.out", cwd=REPO))
        self.issuers[name] = issuer
        return issuer.wait_output(r"token endpoint: (\S+)")

    def start_grantbox(self, certs: Certs, *, workers: int = 1) -> None:
        """``grantbox proxy run`` (route ``grantbox``), or with ``--workers`` above one
        (route ``grantbox-workers``), each with its own identity agent and token endpoint."""
        key = "grantbox" if workers == 1 else "grantbox-workers"
        label = "grantbox proxy run" + (f" --workers {workers}" if workers > 1 else "")
        folder = self._dir(key)
        argv = [
            GRANTBOX, "identity", "serve",
            "--socket-dir", str(folder / "identity"),
            "--trust-domain", TRUST_DOMAIN,
            "--workload", "bench=/grantbox/bench",
            "--oidc-listen", "127.0.0.1:0",
        ]  # fmt: skip
        identity = self._start(Service("grantbox identity serve", argv, folder / "identity.out"))
        oidc = identity.wait_output(r"oidc discovery: (\S+)/\.well-known/")
        socket_path = identity.wait_output(r"workload bench: socket (\S+)")
        token_url = self._issuer("issuer" if workers == 1 else "issuer-workers", oidc, TRUST_DOMAIN)
        profile = configs.grantbox_profile(
            profile_id=SANDBOX_PROFILE,
            token_endpoint=token_url,
            endpoints=[
                (GRANTBOX_HOST, self.http_ports[key]),
                (TLS_HOST, self.tls_ports[key]),
            ],
        )
        conf = folder / "proxy.yaml"
        conf.write_text(yaml.safe_dump(configs.grantbox_proxy_config(profile, sandbox_id="bench")))
        ca = folder / "proxy-ca.pem"
        argv = [
            GRANTBOX, "proxy", "run",
            "--config", str(conf),
            "--listen", "127.0.0.1:0",
            "--identity-socket", f"unix:{socket_path}",
            "--ca-out", str(ca),
            "--upstream-ca", str(certs.upstream_ca),
            "--workers", str(workers),
        ]  # fmt: skip
        # OCSF events (stdout) go to a file, as an operator would keep them.
        proxy_run = Service(label, argv, folder / "proxy.err", stdout=folder / "events.jsonl")
        self._start(proxy_run)
        port = int(proxy_run.wait_output(r"listening on 127\.0\.0\.1:(\d+)"))
        proxy = f"http://127.0.0.1:{port}"
        self.http[key] = Route(
            key, label, self.http_ports[key], GRANTBOX_HOST,
            proxy, issued_token, service=proxy_run, run_wrk=self._host_wrk(key, proxy),
        )  # fmt: skip
        self.tls[key] = Route(
            key, label, self.tls_ports[key], TLS_HOST, proxy,
            issued_token, service=proxy_run, cafile=ca,
        )  # fmt: skip

    def start_sandbox(self) -> None:
        """``grantbox up``, a token endpoint for its identity agent, and a sandbox whose
        provider's profile binds nginx's sandbox port with a token grant."""
        folder = self._dir("sandbox")
        directories = DemoDirectories(folder)
        embedded = EmbeddedDefault(directories, trust_domain="bench.local")
        self._exit.callback(embedded.stop)
        try:
            identity = embedded.start(timeout=120)
        except WorkloadError as exc:
            raise ServiceFailed(f"grantbox up: {str(exc).splitlines()[0]}") from None
        token_url = self._issuer("sandbox-issuer", identity.oidc_url, identity.trust_domain)
        profile = configs.grantbox_profile(
            profile_id=SANDBOX_PROFILE,
            token_endpoint=token_url,
            endpoints=[(GRANTBOX_HOST, self.http_ports["sandbox"])],
        )
        profile_file = folder / "profile.yaml"
        profile_file.write_text(yaml.safe_dump(profile))
        # wrk inside gets the machine's CPUs, as it has outside (the default bound is 1 CPU).
        policy_file = folder / "policy.yaml"
        policy_file.write_text(yaml.safe_dump({"limits": {"cpus": float(os.cpu_count() or 1)}}))
        operator = Operator(directories.environment())
        try:
            operator.run("profile", "import", "-f", str(profile_file))
            operator.run(
                "provider", "create", "--name", "bench",
                "--type", SANDBOX_PROFILE, "--runtime-credentials",
            )  # fmt: skip
            operator.run(
                "sandbox", "create", "--name", SANDBOX, "--provider", "bench",
                "--policy", str(policy_file), "--", "sleep", "infinity",
            )  # fmt: skip
            self._exit.callback(
                lambda: operator.run("sandbox", "delete", SANDBOX, check=False, timeout=60)
            )
            _wait_ready(operator)
        except CommandFailed as exc:
            raise ServiceFailed(str(exc)) from None
        sandbox_id = str(operator.json("sandbox", "get", SANDBOX)["id"])
        self.http["sandbox"] = Route(
            "sandbox", "grantbox sandbox (wrk inside)", self.http_ports["sandbox"],
            GRANTBOX_HOST, None, issued_token, run_wrk=_sandbox_wrk(operator),
            cpu_parts=lambda: _sandbox_parts(sandbox_id),
        )  # fmt: skip


def _sandbox_parts(sandbox_id: str) -> dict[str, list[int]]:
    """The sandbox path's proxy cost: its supervisor (the proxy runs in it; the agent's own
    processes are not counted) and the gateway that stores every event it ships."""
    supervisors = find_processes("supervisor", "run", "--sandbox-id", sandbox_id)
    if not supervisors:
        return {}
    return {"supervisor": supervisors[:1], "gateway": [parent_pid(supervisors[0])]}


def _wait_ready(operator: Operator, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state: dict[str, Any] = operator.json("sandbox", "get", SANDBOX)
        if state.get("phase") == "ready":
            return
        if state.get("phase") == "error":
            raise ServiceFailed(f"sandbox failed: {state.get('phase_reason')}")
        if time.monotonic() > deadline:
            raise ServiceFailed(f"sandbox not ready after {timeout:g}s ({state.get('phase')})")
        time.sleep(0.5)


def _sandbox_wrk(operator: Operator) -> WrkRunner:
    """wrk inside the sandbox: the script goes to the sandbox's private /tmp and wrk talks
    to the sandbox's proxy at ``$HTTP_PROXY``, its only way out."""

    def run(script: str, seconds: float) -> str:
        wrk = shlex.join(wrk_argv("", "/tmp/bench.lua", seconds)[:-1])  # noqa: S108
        command = f'printf "%s" "$1" > /tmp/bench.lua && exec {wrk} "$HTTP_PROXY/"'
        result = operator.exec_in(SANDBOX, ["sh", "-c", command, "sh", script], seconds + 60)
        if result.code != 0:
            raise ServiceFailed(f"wrk in the sandbox failed: {result.stderr.strip()[-300:]}")
        return result.stdout

    return run
