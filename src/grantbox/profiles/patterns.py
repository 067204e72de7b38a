"""Host and path patterns: the one matcher used by validation, ambiguity checks and the proxy.

Hosts are dot-separated labels compared case-insensitively. A label ``*`` stands for exactly
one label; a leading ``**`` label for one or more labels. Wildcards are whole labels only:
``foo*.example.com`` is rejected rather than given a second, subtly different meaning.

Paths are ``/``-separated segments compared case-sensitively. A segment ``*`` stands for
exactly one non-empty segment; a trailing ``**`` for zero or more segments, so ``/v1/**``
covers ``/v1`` and everything below it. ``""``, ``**`` and ``/**`` all mean "any path".
The query string and fragment are never part of a match.

Because wildcards are whole labels/segments, overlap and intersection are exact (no
conservative guesses), and specificity is a strict total order on distinct patterns that
overlap: two bindings can only tie when their patterns are identical, which validation
reports as an ambiguity instead of leaving it to run time.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

ONE = "*"
MANY = "**"

# A DNS-ish label: letters, digits, hyphen and underscore (seen in service names).
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# Characters a path segment may hold in a pattern (RFC 3986 pchar without percent
# escapes being decoded; '*' only as a whole segment).
_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()+,;=:@%]*")

# Ranks used in specificity keys: a literal is more specific than '*', which is more
# specific than '**', which is more specific than nothing at that position.
_RANK_LITERAL = 3
_RANK_ONE = 2
_RANK_MANY = 1
_RANK_ABSENT = 0


class PatternError(ValueError):
    """A host or path pattern that cannot be given a meaning."""


# ---------------------------------------------------------------------------------------
# Hosts
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostPattern:
    """A parsed host pattern. ``labels`` are lower-case, left to right."""

    labels: tuple[str, ...]
    ip: bool = False

    @property
    def text(self) -> str:
        if self.ip and ":" in self.labels[0]:
            return self.labels[0]
        return ".".join(self.labels)

    @property
    def has_many(self) -> bool:
        return bool(self.labels) and self.labels[0] == MANY

    @property
    def is_literal(self) -> bool:
        return ONE not in self.labels and MANY not in self.labels

    @property
    def wildcards(self) -> int:
        return sum(1 for label in self.labels if label in (ONE, MANY))

    def __str__(self) -> str:
        return self.text


def _strip_brackets(value: str) -> str:
    if value.startswith("[") and value.endswith("]"):
        return value[1:-1]
    return value


@lru_cache(maxsize=4096)
def parse_host_pattern(text: str) -> HostPattern:
    """Parse and normalise a host pattern, or raise :class:`PatternError` saying why."""
    value = text.strip()
    if value != text:
        raise PatternError("host pattern must not contain leading or trailing whitespace")
    if not value:
        raise PatternError("host pattern is empty")
    inner = _strip_brackets(value)
    if ":" in inner:
        try:
            address = ipaddress.IPv6Address(inner)
        except ValueError as exc:
            raise PatternError(f"'{text}' is not a valid IPv6 address") from exc
        return HostPattern((str(address),), ip=True)
    value = value.lower()
    if value.endswith("."):
        value = value[:-1]
    labels = tuple(value.split("."))
    for index, label in enumerate(labels):
        if label == "":
            raise PatternError(f"host pattern '{text}' has an empty label")
        if label == MANY:
            if index != 0:
                raise PatternError(f"'**' may only be the first label of a host pattern: '{text}'")
            if len(labels) < 2:
                raise PatternError(f"'**' needs at least one label after it: '{text}'")
            continue
        if label == ONE:
            continue
        if "*" in label:
            raise PatternError(
                f"wildcards must be whole labels ('*' or a leading '**'), not part of '{label}'"
            )
        if not _LABEL.fullmatch(label):
            raise PatternError(f"'{label}' is not a valid host label")
    is_ip = False
    if all(label.isdigit() for label in labels) and len(labels) == 4:
        try:
            ipaddress.IPv4Address(value)
        except ValueError as exc:
            raise PatternError(f"'{text}' is not a valid IPv4 address") from exc
        is_ip = True
    return HostPattern(labels, ip=is_ip)


def normalize_host(host: str) -> tuple[str, ...] | None:
    """Labels of a concrete request host, or ``None`` when it can never match anything."""
    value = _strip_brackets(host.strip())
    if not value:
        return None
    if ":" in value:
        try:
            return (str(ipaddress.IPv6Address(value)),)
        except ValueError:
            return None
    value = value.lower()
    if value.endswith("."):
        value = value[:-1]
    labels = tuple(value.split("."))
    if any(label == "" or label in (ONE, MANY) for label in labels):
        return None
    return labels


def _label_fits(pattern_label: str, label: str) -> bool:
    return pattern_label in (ONE, label)


def host_matches(pattern: HostPattern | str, host: str) -> bool:
    """Whether a concrete host falls under a host pattern."""
    parsed = parse_host_pattern(pattern) if isinstance(pattern, str) else pattern
    labels = normalize_host(host)
    if labels is None:
        return False
    if parsed.has_many:
        suffix = parsed.labels[1:]
        if len(labels) < len(suffix) + 1:
            return False
        tail = labels[len(labels) - len(suffix) :]
        return all(_label_fits(p, h) for p, h in zip(suffix, tail, strict=True))
    if len(labels) != len(parsed.labels):
        return False
    return all(_label_fits(p, h) for p, h in zip(parsed.labels, labels, strict=True))


def _meet_label(a: str, b: str) -> str | None:
    """The label both single-label positions accept, or None when they exclude each other."""
    if a == ONE:
        return b
    if b == ONE or a == b:
        return a
    return None


def host_intersection(a: HostPattern, b: HostPattern) -> HostPattern | None:
    """The pattern matching exactly the hosts both match, or ``None`` when none exist."""
    if a.ip or b.ip:
        return a if a.labels == b.labels else None
    if a.has_many and b.has_many:
        sa, sb = a.labels[1:], b.labels[1:]
        longer, shorter = (sa, sb) if len(sa) >= len(sb) else (sb, sa)
        offset = len(longer) - len(shorter)
        merged = list(longer)
        for i, label in enumerate(shorter):
            met = _meet_label(longer[offset + i], label)
            if met is None:
                return None
            merged[offset + i] = met
        return HostPattern((MANY, *merged))
    if a.has_many or b.has_many:
        many, fixed = (a, b) if a.has_many else (b, a)
        suffix = many.labels[1:]
        if len(fixed.labels) < len(suffix) + 1:
            return None
        offset = len(fixed.labels) - len(suffix)
        merged = list(fixed.labels)
        for i, label in enumerate(suffix):
            met = _meet_label(fixed.labels[offset + i], label)
            if met is None:
                return None
            merged[offset + i] = met
        return HostPattern(tuple(merged))
    if len(a.labels) != len(b.labels):
        return None
    merged = []
    for x, y in zip(a.labels, b.labels, strict=True):
        met = _meet_label(x, y)
        if met is None:
            return None
        merged.append(met)
    return HostPattern(tuple(merged))


def hosts_overlap(a: HostPattern, b: HostPattern) -> bool:
    """Whether some concrete host matches both patterns."""
    return host_intersection(a, b) is not None


def _rank(label: str) -> int:
    if label == MANY:
        return _RANK_MANY
    if label == ONE:
        return _RANK_ONE
    return _RANK_LITERAL


def host_specificity(pattern: HostPattern) -> tuple[int, ...]:
    """Sort key: larger is more specific, and a narrower pattern is always more specific.

    A pattern without ``**`` (fixed length) beats one with it; among ``**`` patterns a longer
    suffix wins. Then fewer ``*`` labels win, then labels are compared from the right (the
    most significant DNS label first), a literal beating ``*``. Distinct patterns that overlap
    never compare equal, and when one pattern's hosts are a subset of another's, the subset
    has the larger key.
    """
    ones = sum(1 for label in pattern.labels if label == ONE)
    ranks = tuple(_rank(label) for label in reversed(pattern.labels))
    if pattern.has_many:
        return (0, len(pattern.labels) - 1, -ones, *ranks, _RANK_ABSENT)
    return (1, 0, -ones, *ranks, _RANK_ABSENT)


# ---------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A parsed path pattern. ``segments`` exclude the leading empty one; ``any`` covers all."""

    segments: tuple[str, ...]
    trailing_many: bool

    @property
    def is_any(self) -> bool:
        return not self.segments and self.trailing_many

    @property
    def is_literal(self) -> bool:
        return not self.trailing_many and ONE not in self.segments

    @property
    def wildcards(self) -> int:
        return sum(1 for s in self.segments if s == ONE) + (1 if self.trailing_many else 0)

    @property
    def text(self) -> str:
        if self.is_any:
            return ""
        parts = list(self.segments)
        if self.trailing_many:
            parts.append(MANY)
        return "/" + "/".join(parts)

    def __str__(self) -> str:
        return self.text


ANY_PATH = PathPattern((), trailing_many=True)


@lru_cache(maxsize=4096)
def parse_path_pattern(text: str) -> PathPattern:
    """Parse and normalise a path pattern, or raise :class:`PatternError` saying why."""
    if text in ("", MANY, "/" + MANY):
        return ANY_PATH
    if text != text.strip():
        raise PatternError("path pattern must not contain leading or trailing whitespace")
    if not text.startswith("/"):
        raise PatternError(f"path pattern '{text}' must start with '/'")
    if "?" in text or "#" in text:
        raise PatternError("path patterns never include a query string or fragment")
    segments = text[1:].split("/")
    trailing_many = False
    if segments[-1] == MANY:
        trailing_many = True
        segments = segments[:-1]
    for segment in segments:
        if segment == MANY:
            raise PatternError(f"'**' may only be the last segment of a path pattern: '{text}'")
        if segment == ONE:
            continue
        if "*" in segment:
            raise PatternError(
                "wildcards must be whole segments ('*' or a trailing '**'), "
                f"not part of '{segment}'"
            )
        if not _SEGMENT.fullmatch(segment):
            raise PatternError(f"path segment '{segment}' contains characters a URL path cannot")
        if segment in (".", ".."):
            raise PatternError(f"path pattern '{text}' contains a dot segment")
    return PathPattern(tuple(segments), trailing_many)


def request_path(target: str) -> str:
    """The path part of a request target: no query string, no fragment."""
    for sep in ("?", "#"):
        index = target.find(sep)
        if index >= 0:
            target = target[:index]
    return target or "/"


def path_matches(pattern: PathPattern | str, path: str) -> bool:
    """Whether a concrete request path (query ignored) falls under a path pattern."""
    parsed = parse_path_pattern(pattern) if isinstance(pattern, str) else pattern
    if parsed.is_any:
        return True
    concrete = request_path(path)
    if not concrete.startswith("/"):
        return False
    segments = concrete[1:].split("/")
    want = parsed.segments
    if parsed.trailing_many:
        if len(segments) < len(want):
            return False
        # '/v1/**' covers '/v1' and '/v1/': a lone trailing empty segment adds nothing.
        head = segments[: len(want)]
    else:
        if len(segments) != len(want):
            return False
        head = segments
    return all((p == ONE and s != "") or p == s for p, s in zip(want, head, strict=True))


def _meet_segment(a: str, b: str) -> str | None:
    if a == ONE:
        return b
    if b == ONE or a == b:
        return a
    return None


def path_intersection(a: PathPattern, b: PathPattern) -> PathPattern | None:
    """The pattern matching exactly the paths both match, or ``None`` when none exist."""
    if a.trailing_many and b.trailing_many:
        longer, shorter = (a, b) if len(a.segments) >= len(b.segments) else (b, a)
        merged = list(longer.segments)
        for i, segment in enumerate(shorter.segments):
            met = _meet_segment(longer.segments[i], segment)
            if met is None:
                return None
            merged[i] = met
        return PathPattern(tuple(merged), trailing_many=True)
    if a.trailing_many or b.trailing_many:
        many, fixed = (a, b) if a.trailing_many else (b, a)
        if len(fixed.segments) < len(many.segments):
            return None
        merged = list(fixed.segments)
        for i, segment in enumerate(many.segments):
            met = _meet_segment(fixed.segments[i], segment)
            if met is None:
                return None
            merged[i] = met
        return PathPattern(tuple(merged), trailing_many=False)
    if len(a.segments) != len(b.segments):
        return None
    merged = []
    for x, y in zip(a.segments, b.segments, strict=True):
        met = _meet_segment(x, y)
        if met is None:
            return None
        merged.append(met)
    return PathPattern(tuple(merged), trailing_many=False)


def paths_overlap(a: PathPattern, b: PathPattern) -> bool:
    """Whether some concrete path matches both patterns."""
    return path_intersection(a, b) is not None


def path_specificity(pattern: PathPattern) -> tuple[int, ...]:
    """Sort key: larger is more specific. Any concrete path beats "any path".

    Mirrors :func:`host_specificity`: a fixed-length pattern beats one ending in ``**``;
    among those, a longer prefix wins; then fewer ``*`` segments; then segments compared
    from the left, a literal beating ``*``.
    """
    if pattern.is_any:
        return (0,)
    ones = sum(1 for segment in pattern.segments if segment == ONE)
    ranks = tuple(_rank(segment) for segment in pattern.segments)
    if pattern.trailing_many:
        return (1, 0, len(pattern.segments), -ones, *ranks, _RANK_ABSENT)
    return (1, 1, 0, -ones, *ranks, _RANK_ABSENT)
