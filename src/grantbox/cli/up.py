"""``grantbox up``: gateway, local identity agent and local driver in one foreground command.

With ``--spire-server-socket``/``--spire-agent-socket``/``--spire-parent-id`` an external
SPIRE gives the sandboxes their identities instead of the local agent: one registration
entry per sandbox, selected by a gid reserved for its supervisor (see
:mod:`grantbox.drivers.spire`).

Ctrl-C or SIGTERM stops the sandboxes first (each supervisor takes its fenced agent and
network namespace with it), then the gateway and the identity agent, and removes the runtime
directory holding the sockets, so nothing is left behind. The sandboxes' records stay: the
next ``grantbox up`` on the same state directory starts them again.

Only one ``up`` runs per state directory (a second is refused, see :mod:`.statelock`). The
gateway's address is recorded for the CLI only once everything answers, in one atomic
write, so ``grantbox up & grantbox wait`` is a safe way to script it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from pathlib import Path

import click
import platformdirs

from grantbox.drivers import LocalDriver, LocalDriverSettings
from grantbox.drivers.invocation import MAX_PROXY_WORKERS
from grantbox.drivers.spire import (
    SpireError,
    SpireRegistrar,
    SpireSettings,
    parse_gid_range,
)
from grantbox.gateway import GatewayServer, GatewaySettings
from grantbox.gateway.settings import DEFAULT_LISTEN, parse_listen, runtime_dir_override
from grantbox.gateway.state_dir import StateDirError, secure_tree
from grantbox.grants import read_ca_file
from grantbox.heap import settle as settle_heap
from grantbox.identity_agent import IdentityAgent
from grantbox.sandbox import isolation_problem, shadow_problem, subids

from .output import fail
from .statelock import StateDirectoryBusy, holding_state_dir

DEFAULT_TRUST_DOMAIN = "grantbox.local"
SHUTDOWN_GRACE = 1  # seconds the gateway waits for long-polls of stopped supervisors


def default_runtime_dir() -> Path:
    """Sockets live here: ``$GRANTBOX_RUNTIME_DIR``, ``/run/grantbox`` as root, else the
    user's runtime directory."""
    override = runtime_dir_override()
    if override is not None:
        return override
    if os.geteuid() == 0:
        return Path("/run/grantbox")
    return Path(platformdirs.user_runtime_dir("grantbox"))


def rootless_private_directories() -> tuple[str, ...]:
    """Without root the agent runs as the invoking user, so it is kept out of that user's
    home and runtime directory (keys, agent sockets) too; as root it runs as nobody."""
    if os.geteuid() == 0:
        return ()
    candidates = [Path.home(), Path(f"/run/user/{os.geteuid()}")]
    return tuple(
        str(path) for path in candidates if path.is_dir() and shadow_problem(str(path)) is None
    )


def remove_stale_runtime(runtime: Path) -> None:
    """Drop socket directories of ``up`` runs that were killed before they could clean up."""
    for directory in runtime.glob("up-*"):
        pid = directory.name.removeprefix("up-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(directory, ignore_errors=True)


def _step(message: str) -> None:
    click.echo(f"• {message}")


@click.command()
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    envvar="GRANTBOX_LISTEN",
    show_envvar=True,
    help="Where the gateway listens (port 0: any free port; the CLI finds it anyway).",
)
@click.option("--trust-domain", default=DEFAULT_TRUST_DOMAIN, show_default=True)
@click.option(
    "--oidc-listen",
    default="127.0.0.1:0",
    show_default=True,
    metavar="HOST:PORT",
    help="OIDC discovery/JWKS of the identity agent (token services verify SVIDs with it).",
)
@click.option("--resolve", multiple=True, metavar="HOST=IP", help="Pinned resolution for proxies.")
@click.option(
    "--upstream-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Extra CA file the sandboxes' proxies trust for upstream TLS.",
)
@click.option(
    "--proxy-workers",
    type=click.IntRange(1, MAX_PROXY_WORKERS),
    metavar="N",
    help="Processes serving each sandbox's egress proxy [default: 1; env "
    "GRANTBOX_PROXY_WORKERS]. One Python process uses at most one core; the grant engine "
    "(one token request per binding) stays in the sandbox's supervisor.",
)
@click.option(
    "--spire-server-socket",
    type=click.Path(path_type=Path),
    help="Take sandbox identities from this SPIRE server (its admin socket) instead of the "
    "local identity agent; needs --spire-agent-socket and --spire-parent-id.",
)
@click.option(
    "--spire-agent-socket",
    type=click.Path(path_type=Path),
    help="The SPIRE agent's Workload API socket (hidden from every sandbox's agent).",
)
@click.option(
    "--spire-parent-id", metavar="SPIFFE_ID", help="This host's SPIRE agent ID (or its alias)."
)
@click.option("--spire-server-command", default="spire-server", show_default=True)
@click.option(
    "--spire-gid-range",
    default="1900000000-1900000999",
    show_default=True,
    metavar="FIRST-LAST",
    help="Gids reserved for supervisors; SPIRE tells sandboxes apart by them.",
)
def up(
    listen: str,
    trust_domain: str,
    oidc_listen: str,
    resolve: tuple[str, ...],
    upstream_ca: Path | None,
    proxy_workers: int | None,
    spire_server_socket: Path | None,
    spire_agent_socket: Path | None,
    spire_parent_id: str | None,
    spire_server_command: str,
    spire_gid_range: str,
) -> None:
    """Run the gateway, a local identity agent and the local driver until Ctrl-C.

    \b
    Example:
      grantbox up &
      grantbox wait
      grantbox sandbox create agent --wait -- sleep infinity
    """
    spire_options = (spire_server_socket, spire_agent_socket, spire_parent_id)
    spire: SpireSettings | None = None
    if any(option is not None for option in spire_options):
        if spire_server_socket is None or spire_agent_socket is None or not spire_parent_id:
            raise click.UsageError(
                "--spire-server-socket, --spire-agent-socket and --spire-parent-id go together"
            )
        try:
            first, count = parse_gid_range(spire_gid_range)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        spire = SpireSettings(
            server_socket=spire_server_socket.resolve(),
            agent_socket=spire_agent_socket.resolve(),
            parent_id=spire_parent_id,
            trust_domain=trust_domain,
            gid_first=first,
            gid_count=count,
            server_command=spire_server_command,
        )
    try:
        parse_listen(listen)
        oidc = parse_listen(oidc_listen)
        if upstream_ca is not None:
            read_ca_file(upstream_ca)  # every supervisor reads it: refused here, not there
        settings = GatewaySettings.from_env(listen=listen, proxy_workers=proxy_workers)
        # Private before anything (the identity agent first) writes into it.
        secure_tree(settings.state_dir)
    except (ValueError, StateDirError) as exc:
        fail(str(exc))
    problem = isolation_problem()
    if problem is not None:
        fail(problem)
    try:
        with holding_state_dir(settings.state_dir, "grantbox up"):
            mode = "root" if os.geteuid() == 0 else "rootless (user namespaces)"
            _step(f"isolation: namespaces available, running as {mode}")
            if os.geteuid() != 0:
                if subids.for_operator(0) is not None:
                    _step("agents run as subordinate ids of yours (/etc/subuid), never as you")
                else:
                    _step(
                        f"agents run as your uid ({subids.why_not()}), in a root where nothing "
                        "of yours is shown but the paths a sandbox policy lists"
                    )
            ca = upstream_ca.resolve() if upstream_ca else None
            settle_heap()
            asyncio.run(_run(settings, trust_domain, oidc, resolve, ca, spire))
    except StateDirectoryBusy as exc:
        fail(str(exc))
    except SpireError as exc:
        fail(f"grantbox up could not use SPIRE: {exc}")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        fail(f"grantbox up could not start: {reason} (gateway {listen}, OIDC {oidc_listen})")
    click.echo("stopped; nothing left running")


async def _run(
    settings: GatewaySettings,
    trust_domain: str,
    oidc: tuple[str, int],
    resolve: tuple[str, ...],
    upstream_ca: Path | None,
    spire: SpireSettings | None = None,
) -> None:
    runtime = default_runtime_dir()
    # Nobody but us may list or traverse an instance's sockets (sandboxes of any instance
    # run as other users): the shared parent is 0711, each instance's directory 0700.
    runtime.mkdir(parents=True, exist_ok=True, mode=0o711)
    if runtime.stat().st_uid == os.geteuid():
        runtime.chmod(0o711)
    remove_stale_runtime(runtime)
    owned = runtime / f"up-{os.getpid()}"
    owned.mkdir(mode=0o700)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    agent = None
    if spire is None:
        agent = IdentityAgent(
            socket_dir=owned / "workloads",
            trust_domain=trust_domain,
            state_dir=settings.state_dir / "identity",
            oidc_listen=oidc,
            admin_socket=owned / "admin.sock",
        )
    gateway: GatewayServer | None = None
    driver: LocalDriver | None = None
    try:
        if agent is not None:
            await agent.start()
            _step(
                f"identity agent: spiffe://{agent.trust_domain}, OIDC discovery at {agent.oidc_url}"
            )
        else:
            assert spire is not None
            await SpireRegistrar(spire).check()
            _step(
                f"identity: SPIRE, spiffe://{spire.trust_domain}/grantbox/sandbox/<id> "
                f"(agent {spire.agent_socket}, one entry per sandbox via {spire.server_socket})"
            )
        # The SPIRE server's admin socket is as good as the trust domain's keys: out of reach.
        spire_hidden = () if spire is None else (str(spire.server_socket.parent),)
        driver = LocalDriver(
            LocalDriverSettings(
                state_root=settings.state_dir / "sandboxes",
                identity_admin_socket=owned / "admin.sock",
                hide=(
                    str(owned),
                    str(settings.state_dir),
                    str(settings.config_dir),
                    *rootless_private_directories(),
                    *spire_hidden,
                ),
                resolve=resolve,
                upstream_ca_file=upstream_ca,
                proxy_workers=settings.proxy_workers,
                spire=spire,
            )
        )
        # Supervisors' long-polls must not hold the gateway's shutdown for their full length.
        gateway = GatewayServer(
            settings,
            driver,
            shutdown_grace=SHUTDOWN_GRACE,
            driver_name="local",
            resume_sandboxes=True,
        )
        identity: dict[str, object]
        if agent is not None:
            identity = {"trust_domain": agent.trust_domain, "oidc_url": agent.oidc_url}
        else:
            assert spire is not None
            identity = {
                "trust_domain": spire.trust_domain,
                "spire_agent_socket": str(spire.agent_socket),
            }
        gateway.gateway.status_extra["identity"] = identity
        resuming = len(await asyncio.to_thread(gateway.gateway.sandboxes.to_resume))
        await asyncio.to_thread(gateway.start)
        _step(f"gateway: {gateway.url} (state in {settings.state_dir})")
        _step(f"local driver: sandbox state in {settings.state_dir / 'sandboxes'}")
        if resuming:
            _step(f"sandboxes: starting again the {resuming} that ran before this `up`")
        gateway.write_client_config({"identity": identity})
        click.echo(f"ready: the CLI finds this gateway via {settings.gateway_file_path}")
        click.echo("press Ctrl-C to stop")
        await stop.wait()
        click.echo("stopping…")
    finally:
        if driver is not None and driver.loop is not None and not driver.loop.is_closed():
            _step("stopping sandboxes")
            with contextlib.suppress(Exception):
                if gateway is not None:  # no sandbox may start while they are stopped
                    quiet = gateway.gateway.orchestrator.quiesce()
                    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(quiet, driver.loop))
                future = asyncio.run_coroutine_threadsafe(driver.aclose(), driver.loop)
                await asyncio.wrap_future(future)
        if gateway is not None:
            gateway.forget_client_config()
            _step("stopping the gateway")
            # Cancelling long-polls of supervisors that are gone is expected, not an error.
            logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
            await asyncio.to_thread(gateway.stop)
        if agent is not None:
            _step("stopping the identity agent")
            await agent.stop()
        shutil.rmtree(owned, ignore_errors=True)
        with contextlib.suppress(OSError):
            runtime.rmdir()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
