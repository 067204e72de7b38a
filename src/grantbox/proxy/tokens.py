"""What the proxy needs from the grants engine, and how its answers become a header.

The proxy depends on this small protocol rather than on the engine class, so a supervisor
can hand in :class:`grantbox.grants.GrantEngine` and unit tests can hand in a recording
source. A source fails with a :class:`grantbox.grants.GrantError`; its ``reason`` is the
answer's.
"""

from __future__ import annotations

from typing import Protocol

from grantbox.grants import GrantError, GrantMisconfigured, TokenMalformed, is_token68
from grantbox.profiles import BindingSet, GrantBinding, header_name_problem

# What credential_header raises, under the name tests written before the one failure
# vocabulary import (tests/security/test_names_and_ids.py): it is the grants error type.
InjectionError = GrantError


class AccessTokenLike(Protocol):
    @property
    def value(self) -> str: ...


class TokenSource(Protocol):
    async def obtain(self, binding: GrantBinding) -> AccessTokenLike: ...

    def replace_bindings(self, bindings: BindingSet) -> None: ...


def credential_header(binding: GrantBinding, token: str) -> tuple[str, str]:
    """``(name, value)`` of the header carrying ``token`` as the binding places it.

    Checked again here, whatever the source did: a token that is not token68 could carry
    CR/LF into the request, and a framing header name could smuggle one. Raises
    :class:`grantbox.grants.TokenMalformed` or :class:`grantbox.grants.GrantMisconfigured`.
    """
    if not is_token68(token):
        raise TokenMalformed("access token is not token68")
    problem = header_name_problem(binding.header_name)
    if problem is not None:
        raise GrantMisconfigured(problem)
    if binding.header_style not in ("bearer", "header"):
        raise GrantMisconfigured(f"auth style '{binding.header_style}' cannot carry a grant")
    return binding.header_name, binding.header_value(token)
