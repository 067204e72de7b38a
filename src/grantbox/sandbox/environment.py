"""The agent's environment: built from nothing, never inherited from the supervisor.

Only a fixed base, the proxy and CA-trust variables, and the sandbox's own declared
variables reach the agent. Declared variables may not override what the sandbox sets,
nor smuggle in identity or grantbox-internal names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
NO_PROXY_VALUE = "127.0.0.1,::1"
CA_TRUST_VARIABLES = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
)

# Prefixes that belong to the supervisor's world and must never reach the agent.
INTERNAL_PREFIXES = ("SPIFFE_", "GRANTBOX_", "SPIRE_")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_internal_variable(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(INTERNAL_PREFIXES)


def proxy_url(port: int) -> str:
    if not 1 <= port <= 65535:
        raise ValueError(f"proxy port {port} is outside 1-65535")
    return f"http://127.0.0.1:{port}"


def _managed_names() -> frozenset[str]:
    names = {"PATH", "HOME", "NO_PROXY", "no_proxy", *CA_TRUST_VARIABLES}
    for variable in PROXY_VARIABLES:
        names.update({variable, variable.lower()})
    return frozenset(names)


MANAGED_NAMES = _managed_names()


def declared_variable_problem(name: str) -> str | None:
    """Why a sandbox-declared variable cannot be passed to the agent, or None."""
    if not _NAME.fullmatch(name):
        return f"{name!r} is not a valid environment variable name"
    if is_internal_variable(name):
        return f"{name} is reserved for grantbox and the workload identity"
    if name in MANAGED_NAMES or name.upper() in {n.upper() for n in MANAGED_NAMES}:
        return f"{name} is set by the sandbox and cannot be overridden"
    return None


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
