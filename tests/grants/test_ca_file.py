"""An operator's CA file (``--upstream-ca``): certificates only, checked when given."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from cryptography import x509

from grantbox.grants import read_ca_file, trust_context
from grantbox.grants.tls import MAX_CA_FILE_BYTES


def test_the_certificates_of_a_bundle_with_comments_are_read(tmp_path: Path) -> None:
    first, second = trustme.CA(), trustme.CA()
    path = tmp_path / "bundle.pem"
    path.write_bytes(
        b"# a bundle as curl ships it\nFirst CA\n========\n"
        + first.cert_pem.bytes()
        + b"\nSecond CA\n=========\n"
        + second.cert_pem.bytes()
    )
    text = read_ca_file(path)
    loaded = x509.load_pem_x509_certificates(text.encode())
    wanted = [first.cert_pem.bytes(), second.cert_pem.bytes()]
    assert [x509.load_pem_x509_certificate(p) for p in wanted] == loaded
    assert "#" not in text and "First CA" not in text
    trust_context(extra_ca_pem=text)  # and ssl takes it


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "holds no PEM certificate that can be read"),
        (b"not a certificate\n", "holds no PEM certificate that can be read"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "holds no PEM"),
        (None, "holds a private key; give it the CA certificates only"),
        (b"#" * (MAX_CA_FILE_BYTES + 1), "is larger than 4 MiB"),
    ],
    ids=["empty", "text", "broken", "with-a-key", "huge"],
)
def test_an_unusable_file_is_one_line_naming_the_file(
    tmp_path: Path, content: bytes | None, says: str
) -> None:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    path.write_bytes(
        ca.cert_pem.bytes() + ca.private_key_pem.bytes() if content is None else content
    )
    with pytest.raises(ValueError, match=r"^upstream CA file ") as caught:
        read_ca_file(path)
    message = str(caught.value)
    assert message.startswith(f"upstream CA file {path} ") and says in message
    assert "\n" not in message and "PRIVATE KEY-----" not in message


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be read: No such file or directory"):
        read_ca_file(tmp_path / "missing.pem")
