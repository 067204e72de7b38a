"""What a token endpoint quotes back never carries the client assertion into details."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from grantbox.grants.engine import redact_secret

SVID = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9zMSJ9"
    ".NUXbvVodgk_vzYpQczSbIjkt4YP3tOF3AGOx_r_2UHLtVO0jzsFecqYkAo2eH7xL4ZNFzkYpA4HV5Ni6htx3kQ"
)
HEADER, PAYLOAD, SIGNATURE = SVID.split(".")


def test_whole_assertion_segments_and_pieces_are_redacted() -> None:
    for quoted in (SVID, SIGNATURE, PAYLOAD[5:30], SVID[:120], f"sig={SIGNATURE[:20]}"):
        detail = redact_secret(f"error_description=bad {quoted} here", SVID)
        assert "[redacted]" in detail
        assert not any(piece in detail for piece in (HEADER, PAYLOAD, SIGNATURE, quoted))


def test_long_credential_like_runs_of_other_origin_are_redacted_too() -> None:
    other = "A" * 20 + "b" * 20 + "_-9"
    assert redact_secret(f"old {other}", SVID) == "old [redacted]"


def test_ordinary_words_and_ids_survive() -> None:
    detail = "token endpoint answered 401 Unauthorized: error=invalid_client; id=3f2a-9c1d-request"
    assert redact_secret(detail, SVID) == detail


@given(st.integers(0, len(SVID) - 12), st.integers(12, 60))
def test_any_quoted_piece_of_the_assertion_is_gone(start: int, length: int) -> None:
    piece = SVID[start : start + length]
    detail = redact_secret(f"x {piece} y", SVID)
    # Every base64url run of 12+ characters left in the detail is not from the assertion.
    for run in (r for r in detail.replace(".", " ").split() if len(r) >= 12):
        assert run == "[redacted]" or run not in SVID
