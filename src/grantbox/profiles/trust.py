"""A token grant's own trust anchors: PEM certificates written into the profile.

The CA travels inline rather than as a path because the profile is imported into the
gateway and used by supervisors on other machines or pods, where no such path exists.
Checked here, once, so that a profile never reaches a supervisor with a CA it cannot load.
"""

from __future__ import annotations

import re

from cryptography import x509

MAX_CA_PEM_BYTES = 64 * 1024
_PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n[A-Za-z0-9+/=\r\n]*?-----END \1-----", re.DOTALL
)


def parse_ca_pem(text: str) -> list[x509.Certificate]:
    """The certificates of a PEM text that holds certificates and nothing else.

    Raises ``ValueError`` with a one-line reason (never echoing the text).
    """
    if len(text.encode("utf-8", "replace")) > MAX_CA_PEM_BYTES:
        raise ValueError(f"is larger than {MAX_CA_PEM_BYTES // 1024} KiB")
    blocks = list(_PEM_BLOCK.finditer(text))
    if not blocks:
        raise ValueError("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    rest = _PEM_BLOCK.sub("", text)
    if rest.strip():
        raise ValueError("holds text outside PEM blocks")
    kinds = {block.group(1) for block in blocks}
    if kinds != {"CERTIFICATE"}:
        others = ", ".join(sorted(kinds - {"CERTIFICATE"}))
        raise ValueError(f"may hold only certificates, not {others}")
    try:
        return x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ValueError("holds a certificate that cannot be parsed") from None


def ca_pem_problem(text: str) -> str | None:
    """Why a ``token_endpoint_ca`` value is unusable, or ``None``."""
    try:
        parse_ca_pem(text)
    except ValueError as exc:
        return f"token_endpoint_ca {exc}"
    return None
