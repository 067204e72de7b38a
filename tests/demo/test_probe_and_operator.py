"""How the demo talks: curl's output split into body and status, and ``grantbox`` run as
an operator would run it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.demo import CommandFailed, Operator, curl_argv, find_example_dir, parse_curl_output
from grantbox.demo.probe import STATUS_MARKER, HttpProbe
from tests.support.demo_keys import jwks, make_key, running_key_publisher


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (f'{{"a": 1}}{STATUS_MARKER}200', HttpProbe(200, '{"a": 1}')),
        (f"{STATUS_MARKER}401", HttpProbe(401, "")),
        (f"x{STATUS_MARKER}1{STATUS_MARKER}403\n", HttpProbe(403, f"x{STATUS_MARKER}1")),
        (f"{STATUS_MARKER}000", HttpProbe(0, "")),
        ("curl: (7) Failed to connect", HttpProbe(0, "curl: (7) Failed to connect")),
    ],
)
def test_curl_output_is_split_into_body_and_status(stdout: str, expected: HttpProbe) -> None:
    assert parse_curl_output(stdout) == expected


@given(st.text(max_size=200), st.integers(100, 599))
def test_any_body_survives_the_split(body: str, status: int) -> None:
    assert parse_curl_output(f"{body}{STATUS_MARKER}{status}") == HttpProbe(status, body)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_real_curl_output_parses() -> None:
    with running_key_publisher(jwks(make_key())) as publisher:
        argv = curl_argv(publisher.jwks_url, timeout=5)
        ok = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        probe = parse_curl_output(ok.stdout)
        assert probe.status == 200
        assert '"keys"' in probe.body
        missing = subprocess.run(
            curl_argv(f"{publisher.url}/nothing"), capture_output=True, text=True, timeout=30
        )
        assert parse_curl_output(missing.stdout).status == 404
    refused = subprocess.run(
        curl_argv("http://127.0.0.1:9/", timeout=5), capture_output=True, text=True, timeout=30
    )
    assert refused.returncode != 0
    assert parse_curl_output(refused.stdout).status == 0


def test_operator_runs_grantbox_like_a_user() -> None:
    profile = str(find_example_dir() / "provider-profile.yaml")
    operator = Operator()
    bindings = operator.json("profile", "bindings", "-f", profile)
    assert {b["audience"] for b in bindings["bindings"]} == {"alpha", "beta"}
    with pytest.raises(CommandFailed, match="does not exist"):
        operator.run("profile", "lint", "-f", "/nonexistent/profile.yaml")
    assert [r.code == 0 for r in operator.history] == [True, False]
