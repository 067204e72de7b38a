"""grantbox side by side with squid, tinyproxy and mitmproxy, all in one run on this machine.

Three comparisons, each with every route alternated in rounds so drift hits all alike:

* plain HTTP: wrk, 16 keep-alive connections, 1 KiB answers from nginx, through each proxy
  adding one ``Authorization`` header (grantbox: a real token, obtained once from a token
  endpoint with its JWT-SVID and injected from its cache), plus nginx direct and, where
  sandboxes can run here, wrk inside a grantbox sandbox through the sandbox's own proxy (a
  sandbox reaches nothing else, so the peers it is compared with are driven from the host by
  the same wrk, in the same rounds);
* TLS interception in kept-alive tunnels: curl --parallel (16 in flight) through squid
  ssl-bump, mitmproxy and grantbox to an nginx TLS upstream, plus curl direct;
* memory: 1,000 idle keep-alive connections held open on each proxy.

nginx's access log proves afterwards that every request through every proxy carried the
header. Installs what it needs (Debian packages, mitmproxy in a scratch venv under
``.bench-cache/``); servers listen on free loopback ports; every run is bounded.

    .venv/bin/python bench/compare.py [--seconds 5] [--rounds 3] [--only http,tls,idle]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench.*, tests.support

from bench.peers import configs
from bench.peers.curl import PARALLEL
from bench.peers.idle import IdlePair, hold_idle, raise_file_limit
from bench.peers.install import (
    CACHE,
    SetupError,
    ensure_debian_packages,
    machine,
    mitmdump,
    versions,
)
from bench.peers.processes import ServiceFailed
from bench.peers.report import (
    HTTP_RATIOS,
    TLS_RATIOS,
    Table,
    http_goal_lines,
    idle_lines,
    markdown,
    ratio_lines,
    ratios,
    section_lines,
    tls_goal_lines,
)
from bench.peers.rounds import Section, http_rounds, tls_rounds
from bench.peers.stack import HTTP_ROUTES, TLS_ROUTES, Route, Stack
from bench.peers.stats import Summary, summarize
from bench.peers.verify import Verdict, read_access_log, verify
from bench.peers.wrk import CONNECTIONS, THREADS

SECTIONS = ("http", "tls", "idle")


def say(line: str) -> None:
    print(line, flush=True)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs per route")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS)
    )
    parser.add_argument("--idle-connections", type=int, default=1000)
    parser.add_argument("--no-sandbox", action="store_true", help="skip the sandbox route")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="proxy worker processes of the grantbox-workers route and the sandbox's proxy",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if (
        unknown
        or args.seconds < 1
        or args.rounds < 1
        or args.idle_connections < 1
        or args.workers < 2
    ):
        parser.error(f"bad arguments (unknown sections: {', '.join(sorted(unknown)) or 'none'})")
    return args


def _start_all(stack: Stack, args: argparse.Namespace, failed: dict[str, str]) -> None:
    certs = stack.certificates()
    stack.start_nginx(certs)
    starters: list[tuple[str, Callable[[], None]]] = [
        ("squid", lambda: stack.start_squid(certs)),
        ("tinyproxy", stack.start_tinyproxy),
        ("mitmproxy", lambda: stack.start_mitmproxy(certs)),
        ("grantbox", lambda: stack.start_grantbox(certs)),
        ("grantbox-workers", lambda: stack.start_grantbox(certs, workers=args.workers)),
    ]
    if "http" in args.only and not args.no_sandbox:
        starters.append(("sandbox", stack.start_sandbox))
    for key, start in starters:
        say(f"starting {key}")
        try:
            start()
        except (ServiceFailed, SetupError) as exc:
            failed[key] = str(exc).splitlines()[0]
            say(f"  {key} is not part of this run: {failed[key]}")


def _idle(stack: Stack, count: int) -> dict[str, IdlePair]:
    results: dict[str, IdlePair] = {}
    for key, route in stack.http.items():
        if key == "sandbox":
            continue  # the same proxy code as proxy run, reachable only from inside
        service = route.service or stack.nginx
        assert service is not None
        if route.proxy is None:
            connect = ("127.0.0.1", route.port)
            target = configs.BODY_PATH
        else:
            host, _, port = route.proxy.removeprefix("http://").partition(":")
            connect = (host, int(port))
            target = route.url
        say(f"  {route.label}: {count} fresh, then {count} used connections")
        fresh = asyncio.run(hold_idle(connect, None, count, service.rss_kib))
        request = (target, f"{route.host}:{route.port}")
        used = asyncio.run(hold_idle(connect, request, count, service.rss_kib))
        results[key] = IdlePair(fresh, used)
    return results


def _token_requests(stack: Stack) -> dict[str, str]:
    found = {}
    for name, issuer in stack.issuers.items():
        match = re.search(r"token requests: (\d+)", issuer.tail(50))
        found[name] = match.group(1) if match else "?"
    return found


def _closed_note(closed: dict[str, int]) -> list[str]:
    """wrk reconnects when a proxy closes a connection; say who did and how often."""
    closers = {key: count for key, count in closed.items() if count}
    if not closers:
        return []
    listed = ", ".join(f"{key} {count:,}" for key, count in closers.items())
    return [f"connections closed by the server after an answer (wrk reconnected): {listed}"]


def _summaries(section: Section) -> dict[str, Summary]:
    return {key: summarize(samples) for key, samples in section.samples.items() if samples}


def _labels(routes: dict[str, Route], order: tuple[str, ...]) -> dict[str, str]:
    return {key: routes[key].label for key in order if key in routes}


@dataclass
class Run:
    """Everything one run measured and checked."""

    args: argparse.Namespace
    machine: str
    failed: dict[str, str] = field(default_factory=dict)  # route -> why it did not start
    http: Section = field(default_factory=Section)
    tls: Section = field(default_factory=Section)
    idle: dict[str, IdlePair] = field(default_factory=dict)
    http_routes: dict[str, Route] = field(default_factory=dict)
    tls_routes: dict[str, Route] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    settings: str = ""

    @property
    def ok(self) -> bool:
        checks = all(v.ok for v in self.verdicts)
        return checks and not (self.failed or self.http.failed or self.tls.failed)

    def http_table(self) -> Table:
        return Table(
            f"Plain HTTP: wrk, {CONNECTIONS} keep-alive connections ({THREADS} threads), "
            f"1 KiB answers, {self.args.rounds} rounds × {self.args.seconds:g} s per route",
            _labels(self.http_routes, HTTP_ROUTES),
            _summaries(self.http),
            {**self.failed, **self.http.failed},
            notes=_closed_note(self.http.extra),
            cpu=self.http.cpu,
        )

    def tls_table(self) -> Table:
        return Table(
            f"TLS interception in kept-alive tunnels: curl --parallel ({PARALLEL} in flight), "
            f"{self.args.rounds} rounds of ~{self.args.seconds:g} s per route",
            _labels(self.tls_routes, TLS_ROUTES),
            _summaries(self.tls),
            {**self.failed, **self.tls.failed},
            notes=[f"tunnels opened per route: {self.tls.extra}"] if self.tls.extra else [],
            cpu=self.tls.cpu,
        )


def _measure(stack: Stack, run: Run) -> None:
    args = run.args
    _start_all(stack, args, run.failed)
    if "http" in args.only:
        say("\n== plain HTTP (wrk)")
        routes = [stack.http[k] for k in HTTP_ROUTES if k in stack.http]
        run.http = http_rounds(routes, args.rounds, args.seconds, say)
    if "tls" in args.only:
        say("\n== TLS interception, kept-alive tunnels (curl --parallel)")
        routes = [stack.tls[k] for k in TLS_ROUTES if k in stack.tls]
        run.tls = tls_rounds(routes, args.rounds, args.seconds, say)
    if "idle" in args.only:
        say(f"\n== {args.idle_connections} idle connections per route")
        run.idle = _idle(stack, args.idle_connections)


def _check(stack: Stack, run: Run) -> None:
    """After every server stopped: nginx's log against what the tools counted."""
    run.tokens = _token_requests(stack)
    logs = read_access_log(stack.access_log().read_text(errors="replace").splitlines())
    checked = {}
    for name, routes, section in (
        ("http", run.http_routes, run.http),
        ("tls", run.tls_routes, run.tls),
    ):
        for key, route in routes.items():
            checked[f"{name}/{key}"] = (route.port, route.expect, section.counted.get(key, 0))
    run.verdicts = verify(logs, checked)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    raise_file_limit(4 * args.idle_connections + 1024)
    try:
        ensure_debian_packages()
        mitm = mitmdump()
    except SetupError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    CACHE.mkdir(exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    run_dir.chmod(0o755)  # servers that drop privileges read their files here
    run = Run(args, machine().line())
    load_start = os.getloadavg()[0]
    say(f"bench: run directory {run_dir}")
    with Stack(run_dir) as stack:
        try:
            _measure(stack, run)
        except (ServiceFailed, OSError) as exc:
            print(f"bench: {exc} (logs in {run_dir})", file=sys.stderr)
            return 1
        finally:
            run.http_routes, run.tls_routes = dict(stack.http), dict(stack.tls)
            stack.stop()
    _check(stack, run)
    run.settings = (
        f"load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
        "versions " + ", ".join(f"{k} {v}" for k, v in versions(mitm).items())
    )
    _print(run)
    _save(run, CACHE / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json")
    if not args.keep and run.ok:
        shutil.rmtree(run_dir, ignore_errors=True)
    elif not run.ok:
        say(f"some routes failed; their logs stay in {run_dir}")
    return 0 if run.ok else 1


def _print(run: Run) -> None:
    http, tls = run.http_table(), run.tls_table()
    say("\n" + "=" * 100)
    say(f"machine: {run.machine}")
    say(run.settings)
    if "http" in run.args.only:
        say("")
        for line in section_lines(http) + ratio_lines(http.summaries, HTTP_RATIOS):
            say(line)
        for line in http_goal_lines(http.summaries):
            say(line)
    if "tls" in run.args.only:
        say("")
        for line in section_lines(tls) + ratio_lines(tls.summaries, TLS_RATIOS):
            say(line)
        for line in tls_goal_lines(tls.summaries):
            say(line)
    idle_labels = {key: run.http_routes[key].label for key in run.idle}
    if run.idle:
        count = run.args.idle_connections
        say(f"\n{count} idle connections: fresh (nothing sent), used (one answer)")
        for line in idle_lines(run.idle, idle_labels):
            say(line)
    say("\nchecks (nginx's access log, after the run):")
    for verdict in run.verdicts:
        say(f"  {verdict.text()}")
    say(
        "  token requests per token endpoint (one per grant binding when the cache works; "
        f"proxy run has two: HTTP and TLS): {run.tokens}"
    )
    for key, reason in run.failed.items():
        say(f"  {key}: did not start: {reason}")
    say("\nMarkdown for the README:\n")
    for line in markdown(
        machine=run.machine,
        settings=run.settings,
        http=http if "http" in run.args.only else None,
        tls=tls if "tls" in run.args.only else None,
        idle=run.idle,
        idle_labels=idle_labels,
        idle_count=run.args.idle_connections,
    ):
        say(line)


def _save(run: Run, path: Path) -> None:
    """Every figure as JSON, for comparing runs later."""

    def table(t: Table) -> dict[str, Any]:
        return {
            "title": t.title,
            "routes": dict(t.labels),
            "summaries": {k: dataclasses.asdict(s) for k, s in t.summaries.items()},
            "ratios": {
                f"{a}/{b}": dataclasses.asdict(r)
                for a, b, r in ratios(t.summaries, HTTP_RATIOS + TLS_RATIOS)
            },
            "failed": dict(t.failed),
            "cpu_seconds": {k: dict(v) for k, v in t.cpu.items()},
            "cpu_us_per_request": {k: t.cpu_us(k) for k in t.summaries},
        }

    data = {
        "machine": run.machine,
        "settings": run.settings,
        "http": table(run.http_table()),
        "tls": table(run.tls_table()),
        "idle": {
            key: {
                mode: {**dataclasses.asdict(one), "per_connection_kib": one.per_connection_kib}
                for mode, one in (("fresh", pair.fresh), ("used", pair.used))
            }
            for key, pair in run.idle.items()
        },
        "checks": [dataclasses.asdict(v) for v in run.verdicts],
        "token_requests": run.tokens,
    }
    path.write_text(json.dumps(data, indent=2))
    say(f"\nfigures saved to {path}")


if __name__ == "__main__":
    sys.exit(main())
