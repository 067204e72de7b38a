"""The Workload API client and the local agent are two packages; consumers load only the client.

Each check runs in a fresh interpreter, because this test process has long since imported
everything.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

# What the agent drags in that a supervisor or a standalone proxy has no business loading.
AGENT_ONLY = ("grantbox.identity_agent", "uvicorn", "starlette")

# The supervisor's package loads its parts lazily; the runtime is what a supervisor runs.
SUPERVISOR_MODULES = [
    name
    for name in ("grantbox.supervisor.runtime", "grantbox.sandbox.supervisor")
    if importlib.util.find_spec(name.rpartition(".")[0]) is not None
    and importlib.util.find_spec(name) is not None
]


def modules_loaded_by(module: str) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def agent_modules(loaded: list[str]) -> list[str]:
    return [m for m in loaded if any(m == p or m.startswith(p + ".") for p in AGENT_ONLY)]


@pytest.mark.parametrize("module", [*SUPERVISOR_MODULES, "grantbox.cli.proxy", "grantbox.identity"])
def test_consumers_do_not_load_the_agent(module: str) -> None:
    loaded = modules_loaded_by(module)
    assert module in loaded
    assert "grantbox.identity.client" in loaded or module == "grantbox.identity"
    assert agent_modules(loaded) == []


def test_the_agent_does_load_its_web_server() -> None:
    """The check above can fail: importing the agent does pull in what consumers must not."""
    loaded = modules_loaded_by("grantbox.identity_agent")
    assert "uvicorn" in agent_modules(loaded)


def test_there_is_a_supervisor_module_to_check() -> None:
    assert SUPERVISOR_MODULES
