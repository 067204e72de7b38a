"""What the images install: the sandbox image only what the supervisor imports, the gateway
image grantbox[kubernetes,postgresql]; both from hash-checked locks on a digest-pinned base."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.packaging.test_dependencies import read_lock

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "deploy" / "images"
SERVER_STACK = ("fastapi", "sqlalchemy", "alembic", "kubernetes", "psycopg", "psycopg_binary")

# What `grantbox supervisor run` loads: the CLI path, then the supervisor and the fresh
# interpreters it starts for each sandboxed process (stage, init, network helper).
SUPERVISOR_PATH = """
import json, sys
from grantbox.cli.app import cli
cli.get_command(None, "supervisor")
import grantbox.supervisor.runtime, grantbox.sandbox.stage, grantbox.sandbox.init
import grantbox.sandbox.network, grantbox.sandbox.launcher
print(json.dumps(sorted({n.split(".")[0] for n, m in sys.modules.items() if m is not None})))
"""
# kubernetes.aio tries kubernetes_validate (a test tool here) and does without it.
GATEWAY_PATH = """
import json, sys
sys.modules["kubernetes_validate"] = None
from grantbox.cli.app import cli
cli.get_command(None, "gateway")
import grantbox.gateway.server, grantbox.drivers.kubernetes, kubernetes.aio.client
from grantbox.gateway.storage import make_engine
make_engine("postgresql://nobody@127.0.0.1:1/none")
print(json.dumps(sorted({n.split(".")[0] for n, m in sys.modules.items() if m is not None})))
"""


def _top_level_modules(code: str) -> set[str]:
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(found.stdout))


def _distributions(modules: set[str]) -> set[str]:
    owners = metadata.packages_distributions()
    found = set()
    for module in modules:
        for owner in owners.get(module, []):
            found.add(canonicalize_name(owner))
    # grantbox itself goes in with --no-deps; setuptools only owns the _distutils_hack .pth.
    return found - {"grantbox", "setuptools"}


def _closure(lock: Path) -> set[str]:
    return set(read_lock(lock))


def test_the_supervisor_imports_no_server_stack() -> None:
    modules = _top_level_modules(SUPERVISOR_PATH)
    assert modules.isdisjoint(SERVER_STACK), sorted(modules & set(SERVER_STACK))


def test_the_sandbox_lock_holds_everything_the_supervisor_imports_and_no_server_stack() -> None:
    needed = _distributions(_top_level_modules(SUPERVISOR_PATH))
    locked = _closure(IMAGES / "sandbox.lock")
    assert needed <= locked, f"add to deploy/images/sandbox.in: {sorted(needed - locked)}"
    assert {"fastapi", "sqlalchemy", "alembic", "kubernetes", "psycopg"}.isdisjoint(locked)


def test_the_supervisor_starts_with_the_server_stack_absent() -> None:
    """As in the sandbox image: those modules cannot be imported at all."""
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in SERVER_STACK)
    code = f"import sys; {blocked}; from grantbox.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "supervisor", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--sandbox-id" in done.stdout


def test_the_gateway_lock_holds_everything_the_gateway_and_its_extras_import() -> None:
    needed = _distributions(_top_level_modules(GATEWAY_PATH))
    locked = _closure(IMAGES / "gateway.lock")
    assert needed <= locked, f"missing from gateway.lock: {sorted(needed - locked)}"


@pytest.mark.parametrize(
    ("dockerfile", "lock"),
    [("Dockerfile.gateway", "gateway.lock"), ("Dockerfile.sandbox", "sandbox.lock")],
)
def test_images_install_their_lock_with_hashes_on_a_pinned_base(dockerfile: str, lock: str) -> None:
    text = (IMAGES / dockerfile).read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert bases, dockerfile
    for base in bases:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), base
    assert len(set(bases)) == 1, "build and final stages use the same base"
    assert f"COPY deploy/images/{lock} ./" in text
    assert f"--require-hashes --no-deps -r {lock}" in text
    assert "--no-deps ." in text
    ignore = (IMAGES / f"{dockerfile}.dockerignore").read_text().split()
    assert f"!deploy/images/{lock}" in ignore
