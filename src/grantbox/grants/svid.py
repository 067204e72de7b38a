"""Where SVIDs come from, as far as the engine is concerned.

The engine needs two things from workload identity: a fresh JWT-SVID for an audience, and,
for mutual-TLS client authentication, the current X.509-SVID with its key.
:class:`grantbox.identity.WorkloadIdentityClient` satisfies both :class:`SvidSource` and
:class:`X509SvidSource`; tests and other callers may pass anything with the same methods.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from grantbox.identity import IdentityDenied, IdentityError

from .answer import sanitise_oauth_field
from .errors import GrantError, WorkloadIdentityDenied, WorkloadIdentityUnavailable
from .tls import ClientCertificate


class Svid(Protocol):
    @property
    def token(self) -> str: ...


class SvidSource(Protocol):
    async def fetch_jwt_svid(self, audience: str) -> Svid: ...


@runtime_checkable
class X509SvidSource(Protocol):
    async def fetch_x509_svid(self) -> ClientCertificate: ...


def identity_failure(exc: BaseException, what: str = "JWT-SVID") -> GrantError:
    """The grant error for a failed SVID fetch.

    The identity client's errors map by class (grants sits above identity): a refusal is
    ``workload_identity_denied``, any other identity error ``workload_identity_unavailable``,
    each with its sanitised detail. Anything else is reported by type only (its message
    might quote what it failed on) and fails closed as unavailable.
    """
    if isinstance(exc, IdentityError):
        cleaned = sanitise_oauth_field(exc.detail) or type(exc).__name__
        if isinstance(exc, IdentityDenied):
            return WorkloadIdentityDenied(f"{what} fetch denied: {cleaned}")
        return WorkloadIdentityUnavailable(f"{what} fetch failed: {cleaned}")
    return WorkloadIdentityUnavailable(f"{what} fetch failed: {type(exc).__name__}")
