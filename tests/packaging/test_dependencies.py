"""Dependencies: ranges in pyproject.toml, exact hash-checked pins in constraints.txt, and
this environment installed from them (what `make` and scripts/bootstrap.sh do)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "deploy" / "images"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def read_lock(path: Path) -> dict[str, tuple[str, str | None, int]]:
    """``name -> (version, marker, hash count)`` of a `uv pip compile --generate-hashes` file."""
    pins: dict[str, tuple[str, str | None, int]] = {}
    current = ""
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), match.group(3), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, marker, hashes = pins[current]
            pins[current] = (version, marker, hashes + 1)
    return pins


def project() -> Any:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def all_requirements() -> list[Requirement]:
    data = project()
    found = [Requirement(r) for r in data["dependencies"]]
    for extra in data["optional-dependencies"].values():
        found += [Requirement(r) for r in extra]
    return [r for r in found if canonicalize_name(r.name) != "grantbox"]


def test_pyproject_keeps_ranges_not_exact_pins() -> None:
    for requirement in all_requirements():
        specifiers = list(requirement.specifier)
        assert specifiers, f"{requirement}: give a compatible range"
        assert all(s.operator != "==" for s in specifiers), f"{requirement}: pin in the lock"


def test_heavy_optional_parts_are_extras() -> None:
    data = project()
    core = {canonicalize_name(Requirement(r).name) for r in data["dependencies"]}
    extras = data["optional-dependencies"]
    assert {"kubernetes", "psycopg"}.isdisjoint(core)
    assert [Requirement(r).name for r in extras["kubernetes"]] == ["kubernetes"]
    assert [Requirement(r).name for r in extras["postgresql"]] == ["psycopg"]
    assert any("grantbox[kubernetes,postgresql]" in r for r in extras["dev"])


def test_every_requirement_is_pinned_within_its_range_with_hashes() -> None:
    lock = read_lock(ROOT / "constraints.txt")
    for requirement in all_requirements():
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} is missing from constraints.txt: run make lock"
        version, _, hashes = lock[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"constraints.txt pins {name}=={version} outside {requirement.specifier}: make lock"
        )
        assert hashes > 0
    assert all(hashes > 0 for _, _, hashes in lock.values())


def test_this_environment_is_installed_from_the_lock() -> None:
    environment = default_environment()
    for name, (version, marker, _) in read_lock(ROOT / "constraints.txt").items():
        if marker and not _applies(marker, environment):
            continue
        assert metadata.version(name) == version, f"{name}: installed differs from the lock"


@pytest.mark.parametrize("lock_file", ["gateway.lock", "sandbox.lock"])
def test_image_locks_agree_with_the_repository_lock(lock_file: str) -> None:
    repository = read_lock(ROOT / "constraints.txt")
    for name, (version, _, hashes) in read_lock(IMAGES / lock_file).items():
        assert repository[name][0] == version, f"{lock_file}: {name} differs: make lock"
        assert hashes > 0


def test_the_gateway_image_lock_has_both_extras_and_no_test_tools() -> None:
    pins = read_lock(IMAGES / "gateway.lock")
    assert {"kubernetes", "psycopg", "psycopg-binary", "fastapi", "sqlalchemy"} <= set(pins)
    assert {"pytest", "hypothesis", "mypy", "ruff", "uv"}.isdisjoint(pins)


def test_bootstrap_installs_from_the_lock_and_make_can_regenerate_it() -> None:
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "--require-hashes --no-deps -r constraints.txt" in bootstrap
    assert "--no-deps -e ." in bootstrap
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lock:", makefile, re.MULTILINE)
    assert "uv pip compile" in makefile and "--generate-hashes" in makefile
    assert re.search(r"^\$\(STAMP\):.*constraints\.txt", makefile, re.MULTILINE)


def _applies(marker: str, environment: Any) -> bool:
    return Marker(marker).evaluate(environment)
