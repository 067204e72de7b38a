"""Smoke test for the peer benchmark's pure parts (bench/peers): reading wrk's and curl's
output, the round statistics and ratios, the access-log proof, and the report. Canned tool
output only: nothing here starts a server or measures time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from bench.peers import configs
from bench.peers.curl import curl_argv, parse_curl
from bench.peers.idle import IdlePair, IdleResult
from bench.peers.processes import cpu_seconds, find_processes, parent_pid
from bench.peers.report import (
    Table,
    http_goal_lines,
    idle_lines,
    markdown,
    ratio_lines,
    section_lines,
)
from bench.peers.stats import ratio, summarize
from bench.peers.verify import read_access_log, verify
from bench.peers.wrk import WrkOutputError, WrkResult, lua_script, parse_wrk

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:28951
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.19ms    2.43ms  26.53ms   92.22%
    Req/Sec    18.97k    15.12k   39.33k    66.67%
  39752 requests in 1.10s, 47.92MB read
Requests/sec:  36115.56
Transfer/sec:     43.54MB
BENCH-WRK {"requests":39752,"duration_us":1100689,"bytes":50246368,"p50_us":202.0,\
"p99_us":12334.0,"connect":0,"read":17,"write":0,"status":3,"timeout":1}
"""


def wrk(requests: int, seconds: float, p50: float = 1.0, p99: float = 2.0) -> WrkResult:
    return WrkResult(requests, seconds, p50, p99, errors=0, closed=0, bytes=0)


def test_wrk_result_line_is_read_and_closes_are_not_errors() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 39752
    assert result.seconds == pytest.approx(1.100689)
    assert result.p50_ms == pytest.approx(0.202)
    assert result.p99_ms == pytest.approx(12.334)
    assert result.errors == 4  # status + timeout; a server closing is not an error
    assert result.closed == 17
    assert result.rate == pytest.approx(39752 / 1.100689)


def test_wrk_output_without_result_line_names_what_wrk_said() -> None:
    with pytest.raises(WrkOutputError, match="unable to connect"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_lua_script_sends_absolute_form_with_the_origin_host() -> None:
    script = lua_script("http://127.0.0.1:8080/1k", "127.0.0.1:8080")
    assert 'wrk.path = "http://127.0.0.1:8080/1k"' in script
    assert 'wrk.headers["Host"] = "127.0.0.1:8080"' in script
    assert "done = function" in script
    with pytest.raises(ValueError, match="quotes"):
        lua_script('http://x/"; os.exit()')


def test_curl_lines_become_rate_and_percentiles() -> None:
    lines = ["200 0.010 1 1024"] * 98 + ["200 0.050 0 1024", "502 0.001 0 120", "garbage"]
    result = parse_curl("\n".join(lines), 2.0, body_size=1024)
    assert result.requests == 99
    assert result.errors == 1
    assert result.connects == 98
    assert result.rate == pytest.approx(49.5)
    assert result.p50_ms == pytest.approx(10.0)
    assert 10.0 < result.p99_ms <= 50.0


def test_curl_argv_globs_distinct_urls_through_the_proxy() -> None:
    argv = curl_argv("https://localhost:1/1k", 500, proxy="http://127.0.0.1:2", cafile="ca.pem")
    assert argv[-1] == "https://localhost:1/1k?n=[1-500]"
    assert argv[argv.index("--proxy") + 1] == "http://127.0.0.1:2"
    assert "--parallel" in argv and "--http1.1" in argv
    with pytest.raises(ValueError, match="count"):
        curl_argv("https://localhost:1/1k", 0, proxy=None, cafile="ca.pem")


def test_summary_pools_rounds_and_ratio_pairs_them() -> None:
    grantbox = summarize([wrk(6000, 2.0, p50=2.0), wrk(4000, 2.0, p50=4.0)])
    tinyproxy = summarize([wrk(4000, 2.0, p50=3.0), wrk(4000, 2.0, p50=3.0)])
    assert grantbox.rate == 2500
    assert (grantbox.rate_low, grantbox.rate_high) == (2000, 3000)
    assert grantbox.p50_ms == 3.0
    measured = ratio(grantbox, tinyproxy)
    assert measured is not None
    assert measured.value == pytest.approx(1.25)
    assert (measured.low, measured.high) == (pytest.approx(1.0), pytest.approx(1.5))
    assert measured.text() == "1.25× (1.00–1.50)"
    assert ratio(grantbox, summarize([wrk(0, 2.0)])) is None


def test_access_log_proves_each_route_added_its_header() -> None:
    token = "Bearer gbx1.abc"
    lines = [
        '1001 "-"',
        '1001 "-"',
        f'1002 "{configs.static_token("squid")}"',
        '1003 "-"',  # a proxy that skipped the header
        f'1004 "{token}"',
        f'1004 "{token}"',
        "not a log line",
    ]
    logs = read_access_log(lines)
    assert logs[1004].values == Counter({token: 2})
    verdicts = {
        v.route: v
        for v in verify(
            logs,
            {
                "direct": (1001, lambda v: v in ("", "-"), 2),
                "squid": (1002, lambda v: v == configs.static_token("squid"), 1),
                "lazy": (1003, lambda v: v.startswith("Bearer"), 1),
                "grantbox": (1004, lambda v: v.startswith("Bearer gbx"), 2),
                "short": (1004, lambda v: v.startswith("Bearer gbx"), 3),  # fewer than counted
            },
        )
    }
    assert verdicts["direct"].ok and verdicts["squid"].ok and verdicts["grantbox"].ok
    assert verdicts["grantbox"].distinct == 1
    assert not verdicts["lazy"].ok and verdicts["lazy"].wrong == 1
    assert not verdicts["short"].ok
    assert "FAILED" in verdicts["lazy"].text()


def test_report_prints_ratios_goals_and_markdown() -> None:
    summaries = {
        "tinyproxy": summarize([wrk(10000, 2.0, p50=2.0)]),
        "mitmproxy": summarize([wrk(1000, 2.0, p50=15.0)]),
        "grantbox": summarize([wrk(12000, 2.0, p50=1.5)]),
    }
    table = Table(
        "Plain HTTP",
        {"tinyproxy": "tinyproxy", "mitmproxy": "mitmproxy", "grantbox": "grantbox", "squid": "s"},
        summaries,
        {"squid": "squid did not start"},
        cpu={"tinyproxy": {"tinyproxy": 2.0}, "grantbox": {"supervisor": 1.2, "gateway": 0.6}},
    )
    ratios = "\n".join(ratio_lines(summaries, [("grantbox", "tinyproxy")]))
    assert "grantbox / tinyproxy" in ratios and "1.20×" in ratios
    goals = "\n".join(http_goal_lines(summaries))
    assert "vs tinyproxy 1.20× (goal ≥ 1×: met)" in goals
    assert "vs mitmproxy 12.00× (goal ≥ 10×: met)" in goals
    assert "(met)" in goals  # p50 1.5 ms against tinyproxy's 2 ms
    held = IdleResult(1000, 1000, 10_240, 20_480, ())
    closed = IdleResult(1000, 0, 3_000, 3_000, ())
    idle = {"grantbox": IdlePair(held, held), "tinyproxy": IdlePair(held, closed)}
    labels = {"grantbox": "grantbox", "tinyproxy": "tinyproxy"}
    idle_text = "\n".join(idle_lines(idle, labels))
    assert "10.2" in idle_text and "1000 not held (closed by the server)" in idle_text
    block = "\n".join(
        markdown(
            machine="2 × test CPU",
            settings="quiet",
            http=table,
            tls=None,
            idle=idle,
            idle_labels=labels,
            idle_count=1000,
        )
    )
    assert "| grantbox | 6,000 (6,000–6,000) | 1.50 | 2.00 | 150 |" in block
    assert "| tinyproxy | 5,000 (5,000–5,000) | 2.00 | 2.00 | 200 |" in block
    assert "| mitmproxy | 500 (500–500) | 15.0 | 2.00 | — |" in block
    assert "CPU µs per request, grantbox: supervisor 100 + gateway 50" in block
    text = "\n".join(section_lines(table))
    assert "CPU µs/req" in text and "supervisor 100 + gateway 50" in text
    assert "grantbox / tinyproxy 1.20×" in block
    assert "| tinyproxy | 10.2 | — (0 held) |" in block
    assert "| s |" not in block  # a route that did not run has no row


def test_peer_configs_add_exactly_one_header() -> None:
    assert configs.static_token("tinyproxy") in configs.tinyproxy_conf(
        Path("/run"), port=1, user=None, group=None
    )
    addon = configs.mitmproxy_addon()
    compile(addon, "addon.py", "exec")
    assert 'flow.request.headers["Authorization"]' in addon
    profile = configs.grantbox_profile(
        profile_id="p", token_endpoint="http://127.0.0.1:1/t", endpoints=[("a.localhost", 2)]
    )
    assert profile["endpoints"][0]["allowed_ips"] == ["127.0.0.1"]


def test_cpu_time_of_a_process_is_read_from_proc() -> None:
    before = cpu_seconds([os.getpid()])
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert cpu_seconds([os.getpid()]) > before
    assert cpu_seconds([2**22 + 1]) == 0  # gone (or never there): nothing
    marker = f"bench-test-{os.getpid()}-{time.monotonic_ns()}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        deadline = time.monotonic() + 30  # until the child has exec'd (its argv shows)
        while not find_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert find_processes(marker) == [child.pid]
        assert parent_pid(child.pid) == os.getpid()
    finally:
        child.kill()
        child.wait()
