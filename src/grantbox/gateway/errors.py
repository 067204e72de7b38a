"""Why the gateway refuses a request. Each error carries a stable code and an HTTP status.

    GatewayError
    ├── InvalidRequest          400 invalid_request
    ├── Unauthenticated         401 unauthenticated
    ├── Forbidden               403 forbidden
    │   └── ReadOnly            403 read_only          (built-in profiles)
    ├── NotFound                404 not_found
    │   └── SandboxGone         404 sandbox_gone       (supervisor API: stop and tear down)
    ├── Conflict                409 conflict
    │   ├── AlreadyExists       409 already_exists
    │   ├── StaleVersion        409 stale_version      (optimistic concurrency)
    │   ├── InUse               409 in_use             (delete while referenced)
    │   ├── AmbiguousGrants     409 ambiguous_grants   (cross-provider ambiguity)
    │   └── NotRunning          409 not_running        (exec in an exited/failed sandbox)
    ├── InvalidProfile          422 invalid_profile    (diagnostics attached)
    ├── Busy                    429 busy               (exec buffer full: retry the chunk)
    └── Unavailable             503 unavailable        (no compute driver)

A refused write has changed nothing; the message says what to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from grantbox.profiles import Diagnostic


class GatewayError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, details: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            data["details"] = self.details
        return data


class InvalidRequest(GatewayError):
    status = 400
    code = "invalid_request"


class Unauthenticated(GatewayError):
    status = 401
    code = "unauthenticated"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class ReadOnly(Forbidden):
    code = "read_only"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class SandboxGone(NotFound):
    """Told to a supervisor whose sandbox is deleted or being deleted: it must stop."""

    code = "sandbox_gone"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class AlreadyExists(Conflict):
    code = "already_exists"


class StaleVersion(Conflict):
    code = "stale_version"


class NotRunning(Conflict):
    code = "not_running"


class Busy(GatewayError):
    status = 429
    code = "busy"


class InUse(Conflict):
    code = "in_use"


class AmbiguousGrants(Conflict):
    code = "ambiguous_grants"


class InvalidProfile(GatewayError):
    status = 422
    code = "invalid_profile"

    @classmethod
    def from_diagnostics(cls, diagnostics: Sequence[Diagnostic]) -> InvalidProfile:
        errors = [d for d in diagnostics if d.severity == "error"]
        first = str(errors[0]) if errors else "invalid profile"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return cls(first + more, [d.as_dict() for d in diagnostics])


class Unavailable(GatewayError):
    status = 503
    code = "unavailable"
