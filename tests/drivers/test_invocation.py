"""One supervisor invocation for every driver, and the CLI face accepts exactly what it builds."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grantbox.cli.supervisor import supervisor
from grantbox.drivers import SandboxSpec
from grantbox.drivers.invocation import SupervisorInvocation
from grantbox.drivers.kubernetes import pod_manifest
from grantbox.drivers.local import LocalDriverSettings, supervisor_invocation
from tests.kubernetes.conftest import make_config, make_spec

_words = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1
)


def _parsed(args: list[str]) -> dict[str, object]:
    context = supervisor.commands["run"].make_context("run", list(args))
    return dict(context.params)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.lists(_words, max_size=4).map(tuple),
    hide=st.lists(st.from_regex(r"/[a-z]{1,8}(/[a-z]{1,8})?", fullmatch=True), max_size=3),
    port=st.none() | st.integers(1, 65535),
    parent=st.none() | st.integers(1, 2**22),
    with_ca=st.booleans(),
    workers=st.integers(1, 64),
)
def test_the_cli_reads_back_every_invocation(
    tmp_path: Path,
    command: tuple[str, ...],
    hide: list[str],
    port: int | None,
    parent: int | None,
    with_ca: bool,
    workers: int,
) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    ca = tmp_path / "ca.pem"
    ca.write_text("ca")
    invocation = SupervisorInvocation(
        gateway_url="http://127.0.0.1:7443/",
        sandbox_id="s1",
        token_file=str(token),
        identity_socket="/run/gbx/workloads/s1/agent.sock",
        command=command,
        proxy_port=port,
        parent_pid=parent,
        hide=tuple(hide),
        resolve=("alpha.localhost=127.0.0.1",),
        upstream_ca_file=str(ca) if with_ca else None,
        proxy_workers=workers,
    )
    params = _parsed(invocation.args())
    assert params["gateway_url"] == "http://127.0.0.1:7443"
    assert params["sandbox_id"] == "s1"
    assert params["token_file"] == token
    assert params["identity_socket"] == "unix:///run/gbx/workloads/s1/agent.sock"
    assert params["command"] == command
    assert params["hide"] == tuple(hide)
    assert params["proxy_port"] == (3128 if port is None else port)
    assert params["parent_pid"] == parent
    assert params["resolve"] == ("alpha.localhost=127.0.0.1",)
    assert params["upstream_ca"] == (ca if with_ca else None)
    assert params["proxy_workers"] == workers


def test_both_drivers_build_the_same_command_line(tmp_path: Path) -> None:
    spec = make_spec()
    pod = pod_manifest(spec, make_config())
    container = pod["spec"]["containers"][0]
    pod_argv = [*container["command"], *container["args"]]
    local_spec = SandboxSpec(
        sandbox_id=spec.sandbox_id,
        name=spec.name,
        command=spec.command,
        gateway_url="http://grantbox.grantbox.svc.cluster.local:7443",
        supervisor_token="never-on-a-command-line",
    )
    local = supervisor_invocation(
        LocalDriverSettings(state_root=tmp_path, identity_admin_socket=tmp_path / "a.sock"),
        local_spec,
        Path("/run/grantbox/supervisor-token/token"),
        Path("/spiffe-workload-api/spire-agent.sock"),
    )
    local_argv = local.argv(["grantbox"])
    # The local driver adds what only a host process needs; the rest is the same line.
    for flag in ("--parent-pid", "--proxy-port"):
        at = local_argv.index(flag)
        del local_argv[at : at + 2]
    assert local_argv == pod_argv
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env == local.environment()


def test_gateway_serve_with_the_local_driver_is_refused_with_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from grantbox.cli.app import cli

    result = CliRunner().invoke(
        cli,
        ["gateway", "serve", "--driver", "local", "--state-dir", str(tmp_path), "--listen",
         "127.0.0.1:0"],
    )  # fmt: skip
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: cannot start the gateway: the local driver runs inside")
    assert "grantbox up" in lines[-1]
    assert "Traceback" not in result.output
