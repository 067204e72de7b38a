"""The pure part of sandbox identities from SPIRE: gid ranges, gid choice, entry selectors,
the entry record in a sandbox directory, and ``grantbox up``'s SPIRE options."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from grantbox.cli import cli
from grantbox.drivers.spire import (
    SandboxEntry,
    SpireError,
    entry_selectors,
    load_entry,
    parse_gid_range,
    pick_gid,
    save_entry,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1900000000-1900000999", (1_900_000_000, 1000)),
        ("5000-5000", (5000, 1)),
        (" 5000 - 5001 ", (5000, 2)),
    ],
)
def test_gid_ranges(text: str, expected: tuple[int, int]) -> None:
    assert parse_gid_range(text) == expected


@pytest.mark.parametrize(
    "text", ["", "5000", "5001-5000", "0-10", "999-2000", "5000-4294967295", "a-b", "-5-6"]
)
def test_bad_gid_ranges(text: str) -> None:
    with pytest.raises(ValueError, match="gid"):
        parse_gid_range(text)


@given(st.sets(st.integers(min_value=100, max_value=109)))
def test_pick_gid_takes_the_lowest_free_gid_of_the_range(used: set[int]) -> None:
    free = sorted(set(range(100, 110)) - used)
    if free:
        assert pick_gid(100, 10, used) == free[0]
    else:
        with pytest.raises(SpireError, match="all 10 gids"):
            pick_gid(100, 10, used)


def test_selectors_name_uid_and_gid() -> None:
    assert entry_selectors(0, 1_900_000_003) == ["unix:uid:0", "unix:gid:1900000003"]


def test_entry_record_round_trip(tmp_path: Path) -> None:
    entry = SandboxEntry("5b2c", "spiffe://td/grantbox/sandbox/x", 1_900_000_001)
    save_entry(tmp_path, entry)
    assert (tmp_path / "spire-entry.json").stat().st_mode & 0o777 == 0o600
    assert load_entry(tmp_path) == entry
    (tmp_path / "spire-entry.json").write_text("{broken")
    assert load_entry(tmp_path) is None
    assert load_entry(tmp_path / "missing") is None


@pytest.mark.parametrize(
    "args",
    [
        ["--spire-server-socket", "/run/spire/server.sock"],
        ["--spire-agent-socket", "/run/spire/agent.sock", "--spire-parent-id", "spiffe://td/h"],
        [
            "--spire-server-socket", "/s", "--spire-agent-socket", "/a",
            "--spire-parent-id", "spiffe://td/h", "--spire-gid-range", "10-5",
        ],
    ],
)  # fmt: skip
def test_up_refuses_incomplete_spire_options(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["up", *args])
    assert result.exit_code == 2
    assert "spire" in result.output.lower() or "gid" in result.output.lower()
    assert "Traceback" not in result.output
