"""DESIGN §2's one-way dependencies, checked with import-linter against the real code.

The contract lives in pyproject.toml. The second test proves the same contract refuses the
imports it exists to stop (supervisor → gateway, sandbox → supervisor, profiles → identity),
so a contract that silently stopped matching anything would fail here.
"""

from __future__ import annotations

import logging
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from importlinter.cli import lint_imports as _lint_imports

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(**options: Any) -> int:
    """import-linter's run, without its side effect of disabling every logger that exists
    (later tests assert on log records of loggers created before)."""
    manager = logging.Logger.manager
    disabled = {name: logger.disabled for name, logger in manager.loggerDict.items()
                if isinstance(logger, logging.Logger)}  # fmt: skip
    try:
        return int(_lint_imports(**options))
    finally:
        for name, was in disabled.items():
            logging.getLogger(name).disabled = was


def _contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    layers: list[str] = contract["layers"]
    return layers


def test_grantbox_imports_point_down() -> None:
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def _fake_tree(root: Path, name: str, importer: str, imported: str) -> None:
    """A package with grantbox's top-level packages, where ``importer`` imports ``imported``."""
    packages = {
        part.strip().split(".", 1)[1] for layer in _contract_layers() for part in layer.split("|")
    }
    base = root / name
    base.mkdir()
    (base / "__init__.py").write_text("")
    for package in packages:
        (base / package).mkdir()
        body = f"import {name}.{imported}\n" if package == importer else ""
        (base / package / "__init__.py").write_text(body)


@pytest.mark.parametrize(
    ("importer", "imported", "kept"),
    [("supervisor", "gateway", False), ("drivers", "gateway", False),
     ("sandbox", "supervisor", False), ("proxy", "sandbox", False),
     ("gateway", "supervisor", False), ("profiles", "identity", False),
     ("grants", "proxy", False),
     # and the downward imports that the design wants stay allowed
     ("supervisor", "sandbox", True), ("gateway", "drivers", True), ("cli", "gateway", True),
     ("proxy", "profiles", True)],
)  # fmt: skip
def test_the_contract_refuses_upward_and_sideways_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, importer: str, imported: str, kept: bool
) -> None:
    name = "layeredpkg"
    _fake_tree(tmp_path, name, importer, imported)
    layers = [layer.replace("grantbox.", f"{name}.") for layer in _contract_layers()]
    listed = ",\n".join(f'    "{layer}"' for layer in layers)
    config = tmp_path / "contract.toml"
    config.write_text(
        f'[tool.importlinter]\nroot_package = "{name}"\n\n'
        f'[[tool.importlinter.contracts]]\nname = "layers"\ntype = "layers"\n'
        f"layers = [\n{listed},\n]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    assert lint_imports(config_filename=str(config), no_cache=True) == (0 if kept else 1)
