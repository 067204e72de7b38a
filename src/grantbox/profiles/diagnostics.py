"""Diagnostics: what is wrong, where, and in which profile."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about one field of one profile.

    ``field`` is a path such as ``credentials[0].token_grant.audience_overrides[1].port``;
    ``profile`` is the profile id, or the source and document number when the id is unknown.
    """

    profile: str
    field: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.profile}: {self.field}" if self.field else self.profile
        return f"{self.severity}: {where}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        data = asdict(self)
        data["severity"] = str(self.severity)
        return data


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diagnostics)


def field_path(location: Sequence[str | int]) -> str:
    """Render a location tuple as ``a[0].b.c[1]``."""
    out = ""
    for part in location:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class ProfileError(ValueError):
    """Raised when profiles are refused; carries every diagnostic, errors first."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        first = next((d for d in self.diagnostics if d.severity is Severity.ERROR), None)
        summary = str(first) if first else "invalid profile"
        more = len([d for d in self.diagnostics if d.severity is Severity.ERROR]) - 1
        super().__init__(summary + (f" (and {more} more)" if more > 0 else ""))
