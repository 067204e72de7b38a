"""Stored credentials on the wire: a placeholder becomes its value only where it is bound.

The agent holds an opaque placeholder per stored credential (``gbxcred_`` and 32 hex
digits, random per sandbox and credential). In a request the policy admitted, the proxy
replaces a placeholder with its value only when the request's host, port and path fall
under one of that credential's endpoints: in the request target (percent-encoded), in
header values (inside ``Bearer``/``Basic`` too: a Basic credential is decoded, rewritten
and encoded again) and - only where an endpoint sets ``credential_body_rewrite`` - in the
body (escaped for JSON and form bodies). A placeholder anywhere else - another host, port
or path, a body that did not opt in, a placeholder no attached credential owns any more -
is refused as ``credential_endpoint_mismatch``, before anything is dialled.

Only requests are rewritten: nothing here ever sees a response.

Pure: a compiled :class:`PlaceholderTable` and plain request parts in; rewritten parts
(with the owners used) or a :class:`Mismatch` out. Values are never part of a ``repr``, a
detail or an error.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import quote, quote_plus, unquote, unquote_to_bytes

from grantbox.profiles import (
    StaticBinding,
    StaticSecrets,
    StaticSet,
    credential_value_problem,
)

PLACEHOLDER_PREFIX = "gbxcred_"
PLACEHOLDER = re.compile(r"gbxcred_[0-9a-f]{32}")
_PLACEHOLDER_BYTES = re.compile(rb"gbxcred_[0-9a-f]{32}")
# RFC 9110 field-value (as h11 checks it): visible bytes, inner spaces and tabs only.
_FIELD_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?")

Headers = list[tuple[bytes, bytes]]
T = TypeVar("T", str, bytes)


def new_placeholder() -> str:
    """A fresh placeholder: unguessable, and plain in any header, URL, JSON or form."""
    return PLACEHOLDER_PREFIX + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class Secret:
    owner: str  # provider:credential
    value: str = field(repr=False)
    problem: str | None = None  # why the stored value cannot be sent (checked again here)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A placeholder where its credential is not bound (``owner`` None: no credential of
    this sandbox owns it)."""

    owner: str | None
    where: str

    @property
    def detail(self) -> str:
        who = f"the placeholder of {self.owner}" if self.owner else "an unknown placeholder"
        return f"{who} in {self.where}, where that credential is not bound"


class Unusable(ValueError):
    """A bound credential whose stored value cannot be sent (a control byte in it)."""

    def __init__(self, owner: str, problem: str) -> None:
        super().__init__(f"stored credential {owner} {problem}; update the provider")
        self.owner = owner


@dataclass(frozen=True, slots=True)
class PlaceholderTable:
    """One sandbox's stored credentials, compiled with its effective config."""

    statics: StaticSet = field(default_factory=StaticSet)
    secrets: dict[str, Secret] = field(default_factory=dict, repr=False)  # by placeholder
    by_owner: dict[str, Secret] = field(default_factory=dict, repr=False)
    # Placeholders handed out earlier whose credential resolves nothing now (its provider
    # detached, its value removed): placeholder -> owner, so refusals can say whose.
    retired: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        """Whether any placeholder was ever handed out (else requests are never scanned)."""
        return bool(self.secrets or self.retired)

    def owner_of(self, placeholder: str) -> str | None:
        secret = self.secrets.get(placeholder)
        return secret.owner if secret is not None else self.retired.get(placeholder)

    def matching(self, host: str, port: int, path: str) -> tuple[StaticBinding, ...]:
        """The bindings of credentials with a value that cover this request."""
        return tuple(b for b in self.statics.matching(host, port, path) if b.owner in self.by_owner)

    def value(self, owner: str) -> str:
        secret = self.by_owner[owner]
        if secret.problem is not None:
            raise Unusable(owner, secret.problem)
        return secret.value


def compile_placeholders(statics: StaticSet, stored: StaticSecrets) -> PlaceholderTable:
    """Pair each bound credential's value with its placeholder. A credential with a value
    but no placeholder (or the reverse) resolves nothing."""
    owners = {b.owner for b in statics}
    by_placeholder: dict[str, Secret] = {}
    by_owner: dict[str, Secret] = {}
    retired: dict[str, str] = {}
    for owner, placeholder in stored.placeholders.items():
        if not PLACEHOLDER.fullmatch(placeholder):
            continue
        value = stored.values.get(owner)
        if owner not in owners or value is None:
            retired[placeholder] = owner
            continue
        secret = Secret(owner, value, credential_value_problem(value))
        by_placeholder[placeholder] = secret
        by_owner[owner] = secret
    return PlaceholderTable(statics, by_placeholder, by_owner, retired)


@dataclass(frozen=True, slots=True)
class Rewritten(Generic[T]):
    """A rewritten request part and the credentials whose values went into it."""

    value: T = field(repr=False)
    used: frozenset[str] = frozenset()


Encode = Callable[[str], str]


def _as_is(value: str) -> str:
    return value


def _owners(
    found: Iterable[str], table: PlaceholderTable, allowed: frozenset[str], where: str
) -> set[str] | Mismatch:
    """The owners of the placeholders ``found``, or the first that may not be used here.
    Raises :class:`Unusable` for a bound credential whose value cannot be sent."""
    used: set[str] = set()
    for placeholder in found:
        secret = table.secrets.get(placeholder)
        if secret is None or secret.owner not in allowed:
            return Mismatch(table.owner_of(placeholder), where)
        used.add(secret.owner)
    for owner in used:
        table.value(owner)
    return used


def _replace(
    text: str,
    table: PlaceholderTable,
    allowed: frozenset[str],
    where: str,
    encode: Encode = _as_is,
) -> tuple[str, set[str]] | Mismatch:
    """Every placeholder in ``text`` replaced by its (``encode``-d) value, or the first
    one that may not be."""
    used = _owners((m.group() for m in PLACEHOLDER.finditer(text)), table, allowed, where)
    if isinstance(used, Mismatch) or not used:
        return used if isinstance(used, Mismatch) else (text, used)
    new = PLACEHOLDER.sub(lambda m: encode(table.secrets[m.group()].value), text)
    return new, used


def _replace_bytes(
    data: bytes,
    table: PlaceholderTable,
    allowed: frozenset[str],
    where: str,
    encode: Encode = _as_is,
) -> tuple[bytes, set[str]] | Mismatch:
    """:func:`_replace` over bytes: the rest stays byte for byte, values go in as UTF-8."""
    found = (m.group().decode("ascii") for m in _PLACEHOLDER_BYTES.finditer(data))
    used = _owners(found, table, allowed, where)
    if isinstance(used, Mismatch) or not used:
        return used if isinstance(used, Mismatch) else (data, used)

    def value(match: re.Match[bytes]) -> bytes:
        return encode(table.secrets[match.group().decode("ascii")].value).encode("utf-8")

    return _PLACEHOLDER_BYTES.sub(value, data), used


def rewrite_target(
    target: str, table: PlaceholderTable, allowed: frozenset[str]
) -> Rewritten[str] | Mismatch:
    """The request target with bound placeholders replaced (values percent-encoded, so a
    value can never add a path segment or a query parameter). A placeholder the agent
    percent-encoded itself is refused rather than passed on unread."""
    hidden = PLACEHOLDER.search(unquote(PLACEHOLDER.sub("", target)))
    if hidden is not None:
        return Mismatch(table.owner_of(hidden.group()), "the request target (percent-encoded)")
    replaced = _replace(target, table, allowed, "the request target", _percent)
    if isinstance(replaced, Mismatch):
        return replaced
    text, used = replaced
    return Rewritten(text, frozenset(used))


def _percent(value: str) -> str:
    return quote(value, safe="")


def rewrite_headers(
    headers: Sequence[tuple[bytes, bytes]], table: PlaceholderTable, allowed: frozenset[str]
) -> tuple[Headers, frozenset[str]] | Mismatch:
    """Header values with bound placeholders replaced, Basic credentials included."""
    out: Headers = []
    used: set[str] = set()
    for name, raw in headers:
        shown = name.decode("latin-1")
        value = raw
        basic = _basic_credentials(raw)
        if basic is not None:
            replaced = _replace_bytes(basic, table, allowed, f"a Basic credential in {shown}")
            if isinstance(replaced, Mismatch):
                return replaced
            inner, found = replaced
            if found:
                used |= found
                scheme = raw.split(None, 1)[0]
                value = scheme + b" " + base64.b64encode(inner)
        replaced = _replace_bytes(value, table, allowed, f"the {shown} header")
        if isinstance(replaced, Mismatch):
            return replaced
        value, found = replaced
        used |= found
        if value is not raw and not _FIELD_VALUE.fullmatch(value):
            # (Checked here, not by h11, whose error would quote the value.)
            raise Unusable(sorted(used)[0], "does not fit in a header value")
        out.append((name, value))
    return out, frozenset(used)


def _basic_credentials(value: bytes) -> bytes | None:
    """The decoded ``user:password`` of a ``Basic`` value holding a placeholder, or None."""
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if _PLACEHOLDER_BYTES.search(decoded) else None


def find_in_body(body: bytes, table: PlaceholderTable) -> Mismatch | None:
    """The first placeholder in a body that may not carry one (also percent-encoded, as a
    form would carry it)."""
    for candidate in (body, _form_decoded(body)):
        found = _PLACEHOLDER_BYTES.search(candidate)
        if found is not None:
            return Mismatch(table.owner_of(found.group().decode("ascii")), "the request body")
    return None


def _form_decoded(body: bytes) -> bytes:
    if b"%" not in body:
        return b""
    return unquote_to_bytes(body)


def rewrite_body(
    body: bytes, content_type: str, table: PlaceholderTable, allowed: frozenset[str]
) -> Rewritten[bytes] | Mismatch:
    """A body (to an endpoint that opted in) with bound placeholders replaced, each value
    escaped for the body's type: JSON string escapes, form encoding, or as it is (UTF-8)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    encode: Encode = _as_is
    if kind == "application/x-www-form-urlencoded":
        encode = quote_plus
    elif kind == "application/json" or kind.endswith("+json"):
        encode = _json_escaped
    replaced = _replace_bytes(body, table, allowed, "the request body", encode)
    if isinstance(replaced, Mismatch):
        return replaced
    data, used = replaced
    return Rewritten(data, frozenset(used))


def _json_escaped(value: str) -> str:
    return json.dumps(value)[1:-1]


def placements(
    bindings: Iterable[StaticBinding],
    headers: Sequence[tuple[bytes, bytes]],
    target: str,
    table: PlaceholderTable,
) -> tuple[list[tuple[str, str]], str, frozenset[str]]:
    """The headers (and query parameters) stored credentials add because the request does
    not carry them: ``(headers to add, target, owners used)``."""
    present = {name.lower() for name, _ in headers}
    add: list[tuple[str, str]] = []
    used: set[str] = set()
    for binding in bindings:
        if binding.query_param:
            if _has_parameter(target, binding.query_param):
                continue
            value = table.value(binding.owner)
            separator = "&" if "?" in target else "?"
            target += f"{separator}{quote_plus(binding.query_param)}={quote_plus(value)}"
        else:
            if binding.header_name.lower().encode() in present:
                continue
            value = binding.header_value(table.value(binding.owner))
            if not _FIELD_VALUE.fullmatch(value.encode("utf-8")):
                raise Unusable(binding.owner, "does not fit in a header value")
            add.append((binding.header_name, value))
        used.add(binding.owner)
    return add, target, frozenset(used)


def _has_parameter(target: str, name: str) -> bool:
    query = target.partition("?")[2]
    return any(
        unquote(item.partition("=")[0].replace("+", " ")) == name
        for item in query.split("&")
        if item
    )
