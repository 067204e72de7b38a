"""The printed comparison: tables, ratios and the goals of issue #15, as text and Markdown.

Pure formatting over :mod:`bench.peers.stats` values, so the smoke test can feed canned
figures. The Markdown block is what the README's "Performance" section quotes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .idle import IdlePair, IdleResult
from .stats import Ratio, Summary, goal_line, ratio

# (numerator, denominator) rate ratios printed for each section, grantbox first.
HTTP_RATIOS = (
    ("grantbox", "tinyproxy"),
    ("grantbox", "mitmproxy"),
    ("grantbox", "squid"),
    ("grantbox", "direct"),
    ("grantbox-workers", "tinyproxy"),
    ("grantbox-workers", "mitmproxy"),
    ("grantbox-workers", "squid"),
    ("grantbox-workers", "direct"),
    ("sandbox", "tinyproxy"),
    ("sandbox", "mitmproxy"),
    ("sandbox", "squid"),
    ("sandbox", "direct"),
)
TLS_RATIOS = (
    ("grantbox", "mitmproxy"),
    ("grantbox", "squid"),
    ("grantbox", "direct"),
    ("grantbox-workers", "mitmproxy"),
    ("grantbox-workers", "squid"),
    ("grantbox-workers", "direct"),
)
NAMES = {
    "direct": "direct",
    "squid": "squid",
    "tinyproxy": "tinyproxy",
    "mitmproxy": "mitmproxy",
    "grantbox": "grantbox",
    "grantbox-workers": "grantbox (workers)",
    "sandbox": "grantbox sandbox",
}


@dataclass(frozen=True)
class Table:
    """One section's figures, ready to print."""

    title: str
    labels: Mapping[str, str]  # route key -> label, in display order
    summaries: Mapping[str, Summary]
    failed: Mapping[str, str]
    notes: Sequence[str] = ()
    # route -> part -> CPU seconds of its proxy's processes over the measured runs
    cpu: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def cpu_us(self, key: str) -> float | None:
        """The route's proxy CPU time per request (µs), all parts together."""
        summary, parts = self.summaries.get(key), self.cpu.get(key)
        if summary is None or not parts or summary.requests == 0:
            return None
        return sum(parts.values()) / summary.requests * 1e6

    def cpu_notes(self) -> list[str]:
        """Where a route's proxy CPU went when it is more than one process."""
        notes = []
        for key, parts in self.cpu.items():
            summary = self.summaries.get(key)
            if len(parts) > 1 and summary is not None and summary.requests:
                shares = " + ".join(
                    f"{part} {used / summary.requests * 1e6:,.0f}" for part, used in parts.items()
                )
                notes.append(f"CPU µs per request, {self.labels.get(key, key)}: {shares}")
        return notes


def _k(value: float) -> str:
    return f"{value:,.0f}"


def _cpu(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def section_lines(table: Table) -> list[str]:
    lines = [table.title]
    header = (
        f"  {'route':38}{'req/s':>9}  {'(rounds)':<19}{'p50 ms':>8}{'p99 ms':>9}{'errors':>8}"
        f"{'CPU µs/req':>12}"
    )
    lines += [header, "  " + "-" * (len(header) - 2)]
    for key, label in table.labels.items():
        summary = table.summaries.get(key)
        if summary is None:
            reason = table.failed.get(key, "not run")
            lines.append(f"  {label:38}{'—':>9}  {reason[:80]}")
            continue
        spread = f"({_k(summary.rate_low)}–{_k(summary.rate_high)})"
        lines.append(
            f"  {label:38}{_k(summary.rate):>9}  {spread:<19}"
            f"{summary.p50_ms:8.2f}{summary.p99_ms:9.2f}{summary.errors:8d}"
            f"{_cpu(table.cpu_us(key)):>12}"
        )
    lines += [f"  {note}" for note in [*table.notes, *table.cpu_notes()]]
    lines.append(
        "  (CPU µs/req: user + system time of the proxy's processes per request, all cores;"
        " a figure load from elsewhere disturbs less than the rate)"
    )
    return lines


def ratios(
    summaries: Mapping[str, Summary], pairs: Sequence[tuple[str, str]]
) -> list[tuple[str, str, Ratio]]:
    found = []
    for top, bottom in pairs:
        if top in summaries and bottom in summaries:
            measured = ratio(summaries[top], summaries[bottom])
            if measured is not None:
                found.append((top, bottom, measured))
    return found


def ratio_lines(summaries: Mapping[str, Summary], pairs: Sequence[tuple[str, str]]) -> list[str]:
    lines = ["  req/s ratios (per-round range in brackets; p50 against the same peer):"]
    for top, bottom, measured in ratios(summaries, pairs):
        p50 = summaries[top].p50_ms / summaries[bottom].p50_ms if summaries[bottom].p50_ms else 0
        name = f"{NAMES[top]} / {NAMES[bottom]}"
        lines.append(f"    {name:30}{measured.text():24} p50 {p50:.2f}×")
    return lines


def http_goal_lines(summaries: Mapping[str, Summary]) -> list[str]:
    """Issue #15's goals on both grantbox paths: ≥ 1.0× tinyproxy, ≥ 10× mitmproxy, p50 no
    worse than tinyproxy's."""
    lines = ["  goals (issue #15), token injected on every request:"]
    for key in ("grantbox", "grantbox-workers", "sandbox"):
        if key not in summaries:
            continue
        tiny = summaries.get("tinyproxy")
        mitm = summaries.get("mitmproxy")
        parts = [
            goal_line("vs tinyproxy", ratio(summaries[key], tiny) if tiny else None, 1.0),
            goal_line("vs mitmproxy", ratio(summaries[key], mitm) if mitm else None, 10.0),
        ]
        if tiny is not None:
            ok = summaries[key].p50_ms <= tiny.p50_ms
            parts.append(
                f"p50 {summaries[key].p50_ms:.2f} ms vs tinyproxy's {tiny.p50_ms:.2f} ms "
                f"({'met' if ok else 'NOT met'})"
            )
        lines.append(f"    {NAMES[key]}: " + "; ".join(parts))
    return lines


def tls_goal_lines(summaries: Mapping[str, Summary]) -> list[str]:
    if "mitmproxy" not in summaries:
        return []
    return [
        "  goal (issue #15): "
        + goal_line(f"{NAMES[key]} / mitmproxy", ratio(summaries[key], summaries["mitmproxy"]), 5.0)
        for key in ("grantbox", "grantbox-workers")
        if key in summaries
    ]


def _per(result: IdleResult) -> str:
    per = result.per_connection_kib
    return "—" if per is None else f"{per:.1f}"


def idle_lines(results: Mapping[str, IdlePair], labels: Mapping[str, str]) -> list[str]:
    header = (
        f"  {'route':38}{'fresh held':>11}{'KiB/conn':>10}{'used held':>11}{'KiB/conn':>10}"
        f"{'RSS at rest':>13}"
    )
    lines = [header, "  " + "-" * (len(header) - 2)]
    for key, pair in results.items():
        lines.append(
            f"  {labels[key]:38}{pair.fresh.held:>11}{_per(pair.fresh):>10}"
            f"{pair.used.held:>11}{_per(pair.used):>10}"
            f"{pair.fresh.rss_before_kib / 1024:>9.1f} MiB"
        )
        for mode, result in (("fresh", pair.fresh), ("used", pair.used)):
            if result.held < result.wanted:
                reason = result.failures[0] if result.failures else "closed by the server"
                lines.append(f"    {mode}: {result.wanted - result.held} not held ({reason})")
    return lines


def _ms(value: float) -> str:
    """Latency with the digits that matter: 0.43, 21.8, 219."""
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def markdown(
    *,
    machine: str,
    settings: str,
    http: Table | None,
    tls: Table | None,
    idle: Mapping[str, IdlePair],
    idle_labels: Mapping[str, str],
    idle_count: int,
) -> list[str]:
    """The figures in the layout of the README's "Performance" section."""
    lines = [f"One run on {machine}; {settings}.", ""]
    sections = (
        (http, HTTP_RATIOS, "plain HTTP, 16 connections"),
        (tls, TLS_RATIOS, "TLS interception, 16 kept-alive tunnels"),
    )
    for table, pairs, heading in sections:
        if table is None or not table.summaries:
            continue
        lines += [
            f"| {heading} | req/s (slowest–fastest round) | p50 ms | p99 ms | proxy CPU µs/req |"
        ]
        lines += ["|---|---|---|---|---|"]
        for key, label in table.labels.items():
            s = table.summaries.get(key)
            if s is not None:
                spread = f"{_k(s.rate)} ({_k(s.rate_low)}–{_k(s.rate_high)})"
                cpu = _cpu(table.cpu_us(key))
                lines.append(f"| {label} | {spread} | {_ms(s.p50_ms)} | {_ms(s.p99_ms)} | {cpu} |")
        lines.append("")
        if table.cpu_notes():
            lines += [*table.cpu_notes(), ""]
        found = ratios(table.summaries, pairs)
        if found:
            lines.append(
                "; ".join(f"{NAMES[a]} / {NAMES[b]} {r.text()}" for a, b, r in found) + "."
            )
            lines.append("")
    if idle:
        lines += [
            f"| {idle_count:,} idle connections | KiB each, fresh | KiB each, used once |",
            "|---|---|---|",
        ]
        for key, pair in idle.items():
            used = _per(pair.used)
            if pair.used.held < pair.used.wanted:
                used += f" ({pair.used.held} held)"
            lines.append(f"| {idle_labels[key]} | {_per(pair.fresh)} | {used} |")
    return lines
