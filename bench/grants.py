"""Cost of obtain(): a cache hit next to a cold grant, measured side by side in one run.

A cold grant is the full path — JWT-SVID from the local identity agent over its Workload
API socket, then a client_credentials POST to a loopback token endpoint that verifies the
SVID with the agent's JWKS. A hit is the same call answered from the cache. Bounded: a
fixed number of calls each, well under 30 s.

    .venv/bin/python bench/grants.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support

from prometheus_client import CollectorRegistry
from tests.support.token_endpoint import running_token_endpoint

from grantbox.grants import GrantEngine
from grantbox.identity import WorkloadIdentityClient
from grantbox.identity_agent import IdentityAgent
from grantbox.profiles import JWT_SPIFFE, GrantBinding, derive_svid_audience

HITS = 50_000
COLD = 200
TRUST_DOMAIN = "bench.example"


def binding(token_url: str, audience: str) -> GrantBinding:
    return GrantBinding(
        provider="bench",
        credential="access_token",
        profile="bench",
        host="api.example",
        port=443,
        path="",
        audience=audience,
        scopes=("read",),
        token_endpoint=token_url,
        svid_audience=derive_svid_audience(token_url),
        assertion_type=str(JWT_SPIFFE),
        cache_ttl_seconds=0,
        header_name="Authorization",
        header_style="bearer",
    )


async def measure() -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="gbx-bench-") as tmp:
        agent = IdentityAgent(
            socket_dir=Path(tmp) / "sockets",
            trust_domain=TRUST_DOMAIN,
            oidc_listen=("127.0.0.1", 0),
        )
        async with agent:
            socket = agent.add_workload("bench", "/grantbox/sandbox/bench")
            assert agent.oidc_url is not None
            async with (
                running_token_endpoint(oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN) as ep,
                WorkloadIdentityClient(str(socket)) as identity,
            ):
                engine = GrantEngine(identity, max_entries=COLD + 1, registry=CollectorRegistry())
                try:
                    await engine.obtain(binding(ep.token_url, "warmup"))  # JWKS, connections

                    started = time.perf_counter()
                    for i in range(COLD):
                        await engine.obtain(binding(ep.token_url, f"cold-{i}"))
                    cold = (time.perf_counter() - started) / COLD

                    hot = binding(ep.token_url, "warmup")
                    started = time.perf_counter()
                    for _ in range(HITS):
                        await engine.obtain(hot)
                    hit = (time.perf_counter() - started) / HITS
                finally:
                    await engine.aclose()
                if ep.request_count != COLD + 1:
                    raise SystemExit(f"expected {COLD + 1} token requests, saw {ep.request_count}")
    return hit, cold


def main() -> None:
    hit, cold = asyncio.run(measure())
    print(f"{'case':<12}{'calls':>8}{'µs/call':>12}")
    print(f"{'cache hit':<12}{HITS:>8}{hit * 1e6:>12.1f}")
    print(f"{'cold grant':<12}{COLD:>8}{cold * 1e6:>12.1f}")
    print(f"a cold grant costs {cold / hit:,.0f}x a cache hit")


if __name__ == "__main__":
    main()
