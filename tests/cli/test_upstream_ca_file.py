"""``--upstream-ca`` given a file that is not a CA bundle: one human line at start, from
``grantbox up`` (before it creates anything), ``proxy run`` and ``supervisor run`` - never
an SSL library message with an exception class name from every sandbox later."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trustme

from tests.support.grantbox_command import Grantbox
from tests.support.up_process import up_environment


@pytest.fixture(params=["text", "with-a-key"])
def bad_ca(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "ca.pem"
    if request.param == "text":
        path.write_text("not a certificate\n")
        return path, "holds no PEM certificate that can be read (-----BEGIN CERTIFICATE-----)"
    ca = trustme.CA()
    path.write_bytes(ca.cert_pem.bytes() + ca.private_key_pem.bytes())
    return path, "holds a private key; give it the CA certificates only"


def test_grantbox_up_refuses_it_before_it_starts_anything(
    tmp_path: Path, bad_ca: tuple[Path, str]
) -> None:
    path, says = bad_ca
    runtime = tmp_path / f"run-{uuid.uuid4().hex[:6]}"
    gb = Grantbox(env=up_environment(tmp_path / "up", runtime), timeout=60)
    assert gb.refused("up", "--upstream-ca", str(path)) == f"upstream CA file {path} {says}"
    assert not (tmp_path / "up").exists() and not runtime.exists()


def test_proxy_run_refuses_it_as_a_usage_error(tmp_path: Path, bad_ca: tuple[Path, str]) -> None:
    path, says = bad_ca
    config = tmp_path / "proxy.yaml"
    config.write_text("sandbox_id: ca-check\n")
    error = Grantbox(timeout=60).refused(
        "proxy", "run", "--config", str(config), "--listen", "127.0.0.1:0",
        "--upstream-ca", str(path), code=2,
    )  # fmt: skip
    assert error == f"upstream CA file {path} {says}"


def test_a_supervisor_given_it_stops_with_that_line(
    tmp_path: Path, bad_ca: tuple[Path, str]
) -> None:
    path, says = bad_ca
    token = tmp_path / "token"
    token.write_text("t\n")
    token.chmod(0o600)
    (tmp_path / "identity").mkdir()
    error = Grantbox(timeout=60).refused(
        "supervisor", "run", "--gateway", "http://127.0.0.1:9", "--sandbox-id", "ca-check",
        "--token-file", str(token), "--identity-socket", f"unix://{tmp_path}/identity/a.sock",
        "--upstream-ca", str(path), "--", "true",
    )  # fmt: skip
    assert error == f"upstream CA file {path} {says}"
