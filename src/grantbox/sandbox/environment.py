"""The agent's environment: built from nothing, never inherited from the supervisor.

Only a fixed base, the proxy and CA-trust variables, and the sandbox's own declared
variables reach the agent. Declared variables may not override what the sandbox sets,
nor smuggle in identity or grantbox-internal names.
"""

from __future__ import annotations

from collections.abc import Mapping

from grantbox.profiles import (
    CA_TRUST_ENV_VARIABLES,
    INTERNAL_ENV_PREFIXES,
    MANAGED_ENV_NAMES,
    PROXY_ENV_VARIABLES,
    env_name_problem,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PROXY_VARIABLES = PROXY_ENV_VARIABLES
NO_PROXY_VALUE = "127.0.0.1,::1"
CA_TRUST_VARIABLES = CA_TRUST_ENV_VARIABLES

# Prefixes that belong to the supervisor's world and must never reach the agent.
INTERNAL_PREFIXES = INTERNAL_ENV_PREFIXES


def is_internal_variable(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(INTERNAL_PREFIXES)


def proxy_url(port: int) -> str:
    if not 1 <= port <= 65535:
        raise ValueError(f"proxy port {port} is outside 1-65535")
    return f"http://127.0.0.1:{port}"


# What the sandbox sets itself (one list, shared with the rule for a profile's env_var).
MANAGED_NAMES = MANAGED_ENV_NAMES


def declared_variable_problem(name: str) -> str | None:
    """Why a sandbox-declared variable cannot be passed to the agent, or None."""
    return env_name_problem(name)


def agent_environment(
    *,
    proxy_port: int,
    ca_bundle: str,
    home: str = "/",
    declared: Mapping[str, str] | None = None,
    term: str | None = None,
) -> dict[str, str]:
    """The complete environment of a sandboxed process.

    Raises ``ValueError`` for a declared variable that :func:`declared_variable_problem`
    rejects, so a bad sandbox definition fails loudly instead of being half-applied.
    """
    env: dict[str, str] = {}
    for name, value in (declared or {}).items():
        problem = declared_variable_problem(name)
        if problem is not None:
            raise ValueError(problem)
        if "\x00" in value:
            raise ValueError(f"{name} contains NUL")
        env[name] = value
    env.update({"PATH": DEFAULT_PATH, "HOME": home, "LANG": env.get("LANG", "C.UTF-8")})
    if term:
        env["TERM"] = term
    url = proxy_url(proxy_port)
    for variable in PROXY_VARIABLES:
        env[variable] = url
        env[variable.lower()] = url
    env["NO_PROXY"] = NO_PROXY_VALUE
    env["no_proxy"] = NO_PROXY_VALUE
    for variable in CA_TRUST_VARIABLES:
        env[variable] = ca_bundle
    return env
