"""Without an optional extra, the command that needs it fails with one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _grantbox_without(blocked: tuple[str, ...], *args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run the real CLI in a fresh interpreter where ``blocked`` modules cannot be imported."""
    block = "; ".join(f"sys.modules[{name!r}] = None" for name in blocked)
    code = f"import sys; {block}; from grantbox.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    return done.returncode, done.stderr


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, str]:
    return {
        "GRANTBOX_STATE_DIR": str(tmp_path / "state"),
        "GRANTBOX_CONFIG_DIR": str(tmp_path / "config"),
    }


def test_kubernetes_driver_without_the_extra(dirs: dict[str, str]) -> None:
    env = {
        **dirs,
        "GRANTBOX_K8S_NAMESPACE": "sandboxes",
        "GRANTBOX_K8S_SANDBOX_IMAGE": "registry.example/sandbox:1",
        "GRANTBOX_K8S_GATEWAY_URL": "http://grantbox.grantbox.svc:7443",
    }
    code, stderr = _grantbox_without(
        ("kubernetes",),
        "gateway", "serve", "--driver", "kubernetes", "--listen", "127.0.0.1:0",
        env=env,
    )  # fmt: skip
    assert code == 1
    assert stderr.splitlines() == [
        "error: cannot start the gateway: the kubernetes driver needs the Kubernetes client, "
        "which is not installed; install grantbox[kubernetes] "
        "(pip install 'grantbox[kubernetes]')"
    ]


def test_postgresql_storage_without_the_extra(dirs: dict[str, str]) -> None:
    env = {**dirs, "GRANTBOX_DB_URL": "postgresql://grantbox:pw-not-shown@127.0.0.1:1/grantbox"}
    code, stderr = _grantbox_without(
        ("psycopg", "psycopg_binary"), "gateway", "serve", "--listen", "127.0.0.1:0", env=env
    )
    assert code == 1
    assert stderr.splitlines() == [
        "error: cannot start the gateway: PostgreSQL storage needs the psycopg driver, which is "
        "not installed; install grantbox[postgresql] (pip install 'grantbox[postgresql]')"
    ]
    assert "pw-not-shown" not in stderr


def test_laptop_commands_need_neither_extra(tmp_path: Path) -> None:
    """A laptop install (no extras) still lints profiles: nothing imports the extras eagerly."""
    profile = Path(__file__).resolve().parents[2] / "examples/standalone-proxy/api-profile.yaml"
    code, stderr = _grantbox_without(
        ("kubernetes", "psycopg", "psycopg_binary"), "profile", "lint", "-f", str(profile), env={}
    )
    assert code == 0, stderr
