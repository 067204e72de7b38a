"""``grantbox proxy run``: the egress proxy on its own, as a credential-injecting proxy for
workloads that are not sandboxed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import sys
from pathlib import Path

import click
import uvloop
from prometheus_client import CollectorRegistry, start_http_server

from grantbox.grants import GrantEngine, TokenEndpointClient, read_ca_file
from grantbox.heap import settle as settle_heap
from grantbox.identity import WorkloadIdentityClient
from grantbox.identity.socket_uri import (
    ENDPOINT_ENV,
    parse_socket_uri,
    socket_from_environment,
)
from grantbox.logformat import json_logging
from grantbox.profiles import EffectiveConfig
from grantbox.proxy import (
    EgressProxy,
    EventQueue,
    Limits,
    ProcPrograms,
    ProxyPool,
    StandaloneConfigError,
    SystemResolver,
    load_standalone_config,
    parse_overrides,
)

from .output import fail

RUN_HELP = """Run the egress proxy in the foreground.

\b
FILE (YAML or JSON) holds what the gateway would otherwise send:
  sandbox_id: my-workload          # optional, shown in events
  profiles:                        # provider profiles: paths (relative to FILE) or
    - ./alpha-profile.yaml         #   inline profile documents
  providers:                       # attached providers: a name and a profile id
    - {name: alpha, profile: alpha-api}
  policy:                          # extra network policy (sandbox --policy format)
    network:
      - name: mirror
        endpoints: [{host: pypi.org, port: 443}]

\b
Point clients at it with HTTP_PROXY/HTTPS_PROXY=http://HOST:PORT and make them trust the
interception CA written by --ca-out (e.g. SSL_CERT_FILE or curl --cacert). Tokens come from
the SPIFFE Workload API at --identity-socket (default: $SPIFFE_ENDPOINT_SOCKET). OCSF events
go to stdout, one JSON object per line (a slow reader makes the proxy drop and count events,
never wait); operator logs go to stderr. --metrics-listen serves the proxy's and the grant
engine's Prometheus metrics at http://HOST:PORT/metrics. A config error exits with status 2.
"""


def _listen(value: str, option: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; port 0 picks a free port."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint=option)
    return host, int(port)


@click.group()
def proxy() -> None:
    """The egress proxy: policy, TLS interception and token injection."""


@proxy.command("run", help=RUN_HELP)
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Profiles, attached providers and extra network policy (see above).",
)
@click.option("--listen", default="127.0.0.1:3128", show_default=True, help="TCP HOST:PORT.")
@click.option("--unix", "unix_path", type=click.Path(path_type=Path), help="Also listen here.")
@click.option("--identity-socket", help="Workload API socket (unix:/path or /path).")
@click.option("--ca-out", type=click.Path(path_type=Path), help="Write the interception CA here.")
@click.option(
    "--resolve",
    "resolve",
    multiple=True,
    metavar="HOST=IP",
    help="Answer HOST with IP instead of DNS (repeatable).",
)
@click.option(
    "--upstream-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Extra CA bundle to trust for upstream TLS and token endpoints (besides the system "
    "roots).",
)
@click.option(
    "--metrics-listen",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics (proxy and grant engine) at http://HOST:PORT/metrics.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes serving requests. One Python process uses at most one core: give up "
    "to the number of cores to spare. The listeners, the grant engine (one token request "
    "per binding), the events and the metrics stay in one parent process.",
)
def run(
    config_file: Path,
    listen: str,
    unix_path: Path | None,
    identity_socket: str | None,
    ca_out: Path | None,
    resolve: tuple[str, ...],
    upstream_ca: Path | None,
    metrics_listen: str | None,
    workers: int,
) -> None:
    try:
        config = load_standalone_config(config_file)
    except StandaloneConfigError as exc:
        click.echo(f"error: invalid proxy config {exc.source}:", err=True)
        for problem in exc.problems:
            click.echo(f"  - {problem}", err=True)
        raise SystemExit(2) from exc
    try:
        parse_overrides(resolve)  # checked here; each proxy process parses its own copy
    except ValueError as exc:
        fail(str(exc), code=2)
    try:
        extra_ca = read_ca_file(upstream_ca) if upstream_ca is not None else ""
    except ValueError as exc:
        fail(str(exc), code=2)
    address = _listen(listen)
    warning = identity_socket_warning(identity_socket, has_grants=bool(config.bindings))
    if warning:
        click.echo(f"warning: {warning}", err=True)
    metrics = _listen(metrics_listen, "--metrics-listen") if metrics_listen else None
    click.get_current_context().with_resource(json_logging("info"))
    # uvloop: the proxy's I/O loop in C (libuv), about twice the request rate of asyncio's.
    settle_heap()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(
            _serve(
                config,
                address,
                unix_path,
                identity_socket,
                ca_out,
                resolve,
                upstream_ca,
                extra_ca,
                metrics,
                workers,
            )
        )


def identity_socket_warning(value: str | None, *, has_grants: bool) -> str:
    """Why tokens will not come, said at start rather than on the first request ("" when
    the socket is there or nothing needs a token)."""
    if not has_grants:
        return ""
    consequence = (
        "requests that need a token will be refused with token_grant_failed "
        "(workload_identity_unavailable) until it is there"
    )
    try:
        path = parse_socket_uri(value) if value else socket_from_environment()
    except ValueError as exc:
        return f"--identity-socket: {exc}; {consequence}"
    if path is None:
        return (
            f"no Workload API socket: give --identity-socket or set {ENDPOINT_ENV}; {consequence}"
        )
    if not os.path.exists(path):
        return f"Workload API socket {path} does not exist; {consequence}"
    if not stat.S_ISSOCK(os.stat(path).st_mode):
        return f"{path} is not a socket; {consequence}"
    return ""


def _write_events(data: bytes) -> None:
    """OCSF events as JSON lines on stdout (they never hold a token)."""
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


async def _serve(
    config: EffectiveConfig,
    address: tuple[str, int],
    unix_path: Path | None,
    identity_socket: str | None,
    ca_out: Path | None,
    resolve: tuple[str, ...],
    upstream_ca: Path | None,
    extra_ca: str,
    metrics_address: tuple[str, int] | None,
    workers: int = 1,
) -> None:
    """``extra_ca``: the certificates of ``upstream_ca``, checked before anything started.
    ``workers`` above one runs the request path in a :class:`ProxyPool`."""
    limits = Limits()
    registry = CollectorRegistry()
    # With workers, the engine's cache counters are summed with the workers' own (their
    # token reuse), so they are registered through the pool, not beside it.
    engine_registry = CollectorRegistry() if workers > 1 else registry
    identity = WorkloadIdentityClient(identity_socket)
    engine = GrantEngine(
        identity, client=TokenEndpointClient(extra_ca_pem=extra_ca), registry=engine_registry
    )
    proxy: EgressProxy | ProxyPool
    if workers > 1:
        # The workers count their own dropped events; the parent's queue is summed with them.
        queue_registry = CollectorRegistry()
        events = EventQueue(_write_events, limits.event_buffer, registry=queue_registry)
        proxy = ProxyPool(
            config,
            engine,
            workers=workers,
            resolve=resolve,
            upstream_ca_file=upstream_ca,
            events=events,
            registry=registry,
            limits=limits,
            programs=ProcPrograms(),
            own_registries=[queue_registry, engine_registry],
        )
    else:
        events = EventQueue(_write_events, limits.event_buffer, registry=registry)
        proxy = EgressProxy(
            config,
            engine,
            resolver=SystemResolver(parse_overrides(resolve)),
            upstream_ca_file=upstream_ca,
            events=events,
            registry=registry,
            limits=limits,
            programs=ProcPrograms(),
        )
    if ca_out is not None:
        await asyncio.to_thread(ca_out.write_bytes, proxy.ca_cert_pem)
    try:
        await proxy.start(tcp=address, unix=unix_path)
        metrics = (
            start_http_server(metrics_address[1], metrics_address[0], registry=registry)
            if metrics_address
            else None
        )
    except OSError as exc:
        await proxy.stop()
        await engine.aclose()
        await identity.aclose()
        fail(f"cannot listen: {exc.strerror or exc}")
    events.start()
    bound = proxy.tcp_address
    assert bound is not None
    served = ""
    if metrics is not None:
        host, port = (str(part) for part in metrics[0].server_address[:2])
        shown = f"[{host}]" if ":" in host else host
        served = f"; metrics on http://{shown}:{port}/metrics"
    click.echo(
        f"grantbox proxy listening on {bound[0]}:{bound[1]}"
        + (f" and {unix_path}" if unix_path else "")
        + f"; {len(config.bindings)} grant binding(s), revision {config.revision[:19]}"
        + (f"; {workers} worker processes" if workers > 1 else "")
        + served,
        err=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await proxy.stop()
        await events.aclose()
        if metrics is not None:
            metrics[0].shutdown()
            metrics[0].server_close()
        await engine.aclose()
        await identity.aclose()
