"""The side-by-side peer benchmark behind ``bench/compare.py``: nginx, squid, tinyproxy,
mitmproxy and grantbox started on loopback, driven by wrk and curl in alternating rounds.

Modules by job: :mod:`install` (what the bench needs), :mod:`configs` (each server's
configuration), :mod:`processes` (children, readiness, memory), :mod:`stack` (the servers
and the routes through them), :mod:`wrk` and :mod:`curl` (load tools and their output),
:mod:`rounds` (the measuring), :mod:`idle` (memory per idle connection), :mod:`stats`,
:mod:`verify` and :mod:`report` (pure: figures, proof, text).
"""
