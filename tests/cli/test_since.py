"""``--since``: a duration back from now or an RFC 3339 time; anything else is refused."""

from __future__ import annotations

import pytest

from grantbox.cli.since import parse_since
from grantbox.gateway.timestamps import parse_rfc3339, rfc3339

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds_back"),
    [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("0s", 0)],
)
def test_durations_count_back_from_now(text: str, seconds_back: int) -> None:
    assert parse_since(text, NOW) == NOW - seconds_back


def test_rfc3339_times_are_taken_as_they_are() -> None:
    assert parse_since("2027-01-15T08:00:00Z", NOW) == parse_rfc3339("2027-01-15T08:00:00+00:00")
    assert parse_since("2027-01-15T10:00:00+02:00", NOW) == parse_since("2027-01-15T08:00:00Z", 0)
    assert rfc3339(parse_since("2027-01-15T08:00:00.250Z", NOW)) == "2027-01-15T08:00:00.250Z"


@pytest.mark.parametrize("text", ["5", "5 minutes", "m5", "yesterday", "2027-01-15T08:00:00", ""])
def test_anything_else_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration .* RFC 3339"):
        parse_since(text, NOW)
