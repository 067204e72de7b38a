"""What every ``GRANTBOX_*`` settings model shares: the prefix, and one-line errors.

Each component (the gateway, the Kubernetes driver) reads its own pydantic-settings model;
this module sits at the package root and imports nothing of grantbox so any layer may use it.
"""

from __future__ import annotations

from pydantic import ValidationError

ENV_PREFIX = "GRANTBOX_"


def settings_problem(exc: ValidationError, prefix: str = ENV_PREFIX) -> str:
    """One line naming each bad variable and why, never its value (URLs hold passwords)."""
    problems = []
    for error in exc.errors():
        name = prefix + "_".join(str(part) for part in error["loc"]).upper()
        problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid setting " + "; ".join(problems)
