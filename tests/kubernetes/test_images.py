"""Static checks of the Dockerfiles (no container engine here to build them)."""

from __future__ import annotations

import re
from pathlib import Path

from grantbox.drivers.kubernetes import DEFAULT_SOCKET_PATH, TOKEN_DIR

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "deploy" / "images"


def _instructions(name: str) -> list[tuple[str, str]]:
    text = (IMAGES / name).read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _final_stage(name: str) -> list[tuple[str, str]]:
    steps = _instructions(name)
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def _copied_sources(name: str) -> list[str]:
    sources = []
    for keyword, rest in _instructions(name):
        if keyword == "COPY" and not rest.startswith("--from"):
            sources += rest.split()[:-1]
    return sources


def test_gateway_image_runs_unprivileged() -> None:
    users = [rest for keyword, rest in _final_stage("Dockerfile.gateway") if keyword == "USER"]
    assert users, "the gateway image must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_sandbox_image_has_the_supervisor_and_agent_basics() -> None:
    final = _final_stage("Dockerfile.sandbox")
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert re.search(r"apt-get install .*\bcurl\b", runs)
    assert re.search(r"apt-get install .*\bca-certificates\b", runs)
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "/opt/grantbox/bin" in env  # the pod's command is plain `grantbox`
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users[-1] == "root"  # the supervisor builds the namespaces; the agent drops to 65534
    # Mount points exist even with a read-only root filesystem.
    assert str(Path(DEFAULT_SOCKET_PATH).parent) in runs
    assert str(Path(TOKEN_DIR).parent) in runs


def test_images_copy_only_what_exists_and_send_a_small_context() -> None:
    for name in ("Dockerfile.gateway", "Dockerfile.sandbox"):
        for source in _copied_sources(name):
            assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
        ignore = (IMAGES / f"{name}.dockerignore").read_text().split()
        assert ignore[0] == "*"
        assert ".venv" not in {line.lstrip("!") for line in ignore[1:]}
