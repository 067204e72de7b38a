"""Proxy overhead: direct vs through the egress proxy, side by side in one run.

Two pairs, each measured the same way (httpx, keep-alive, a few concurrent workers, a
fixed wall-clock budget): plain HTTP direct vs HTTP through the proxy with a token
injected on every request (the real grant engine, answering from its cache after the
first request); and TLS direct vs TLS intercepted by the proxy (CONNECT, leaf minted for
the host, upstream TLS verified, token injected). The upstream and the proxy each run in
their own process so the client does not share their event loop. Bounded: about 25 s.

    .venv/bin/python bench/proxy.py
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support

import httpx
import trustme

DURATION = 4.0  # seconds per scenario
WARMUP = 20  # requests per scenario before measuring
CONCURRENCY = 4
HOST = "bench.localhost"
TRUST_DOMAIN = "bench.example"


def _upstream_main(queue: Queue[Any], cert_file: str, key_file: str) -> None:
    from tests.support.proxy_upstream import running_upstream

    async def serve() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        async with running_upstream() as plain, running_upstream(context) as tls:
            queue.put((plain.port, tls.port))
            await asyncio.Event().wait()

    asyncio.run(serve())


def _proxy_main(queue: Queue[Any], ports: tuple[int, int], upstream_ca: str, ca_out: str) -> None:
    from prometheus_client import CollectorRegistry
    from tests.support.token_endpoint import running_token_endpoint

    from grantbox.grants import GrantEngine
    from grantbox.identity import WorkloadIdentityClient
    from grantbox.identity_agent import IdentityAgent
    from grantbox.profiles import Profile, SandboxPolicy, build_effective_config
    from grantbox.proxy import EgressProxy

    async def serve() -> None:
        with tempfile.TemporaryDirectory(prefix="gbx-bench-") as tmp:
            agent = IdentityAgent(
                socket_dir=Path(tmp) / "sockets",
                state_dir=Path(tmp) / "state",
                trust_domain=TRUST_DOMAIN,
                oidc_listen=("127.0.0.1", 0),
            )
            async with agent:
                assert agent.oidc_url is not None
                socket = agent.add_workload("bench", "/grantbox/sandbox/bench")
                async with running_token_endpoint(
                    oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN
                ) as issuer:
                    profile = Profile.model_validate(
                        {
                            "id": "bench",
                            "credentials": [
                                {
                                    "name": "token",
                                    "token_grant": {
                                        "token_endpoint": issuer.token_url,
                                        "client_assertion_type": (
                                            "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
                                        ),
                                        "audience": "bench",
                                    },
                                }
                            ],
                            "endpoints": [
                                {"host": HOST, "ports": list(ports), "allowed_ips": ["127.0.0.1"]}
                            ],
                        }
                    )
                    config = build_effective_config("bench", SandboxPolicy(), [("bench", profile)])
                    identity = WorkloadIdentityClient(str(socket))
                    engine = GrantEngine(identity, registry=CollectorRegistry())
                    proxy = EgressProxy(
                        config, engine, upstream_ca_file=Path(upstream_ca), events=lambda e: None
                    )
                    await asyncio.to_thread(Path(ca_out).write_bytes, proxy.ca_cert_pem)
                    await proxy.start(tcp=("127.0.0.1", 0))
                    assert proxy.tcp_address is not None
                    queue.put(proxy.tcp_address[1])
                    await asyncio.Event().wait()

    asyncio.run(serve())


Check = Callable[[httpx.Response], None]
ROUNDS = 4  # direct and proxy alternate in short rounds so load changes hit both alike


async def _round(
    client: httpx.AsyncClient, url: str, seconds: float, latencies: list[float]
) -> float:
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()

    async def worker() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            response = await client.get(url)
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


def _summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50": cuts[49] * 1000, "p99": cuts[98] * 1000}


async def _pair(
    direct: tuple[httpx.AsyncClient, str, Callable[[httpx.Response], None]],
    proxied: tuple[httpx.AsyncClient, str, Callable[[httpx.Response], None]],
) -> tuple[dict[str, float], dict[str, float]]:
    for client, url, check in (direct, proxied):
        for _ in range(WARMUP):
            check(await client.get(url))
    samples: list[list[float]] = [[], []]
    elapsed = [0.0, 0.0]
    for _ in range(ROUNDS):
        for index, (client, url, _check) in enumerate((direct, proxied)):
            elapsed[index] += await _round(client, url, DURATION / ROUNDS, samples[index])
    return _summary(samples[0], elapsed[0]), _summary(samples[1], elapsed[1])


def _injected(response: httpx.Response) -> None:
    headers = {n.lower(): v for n, v in response.json()["headers"]}
    if response.status_code != 200 or not headers.get("authorization", "").startswith("Bearer "):
        raise RuntimeError(f"no token injected: {response.status_code} {response.text}")


def _plain(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code} {response.text}")


async def measure(
    plain_port: int, tls_port: int, proxy_port: int, upstream_ca: Path, proxy_ca: Path
) -> list[tuple[str, dict[str, float], dict[str, float]]]:
    limits = httpx.Limits(max_keepalive_connections=CONCURRENCY, max_connections=CONCURRENCY)
    proxy = f"http://127.0.0.1:{proxy_port}"
    # Direct clients dial the address the proxy would dial (the system resolver here may
    # not answer *.localhost names, which the proxy answers itself).
    cases: list[
        tuple[str, tuple[dict[str, Any], str, Check], tuple[dict[str, Any], str, Check]]
    ] = [
        (
            "HTTP keep-alive, token injected (cached)",
            ({}, f"http://127.0.0.1:{plain_port}/bench", _plain),
            ({"proxy": proxy}, f"http://{HOST}:{plain_port}/bench", _injected),
        ),
        (
            "TLS keep-alive, intercepted + token injected",
            (
                {"verify": ssl.create_default_context(cafile=str(upstream_ca))},
                f"https://127.0.0.1:{tls_port}/bench",
                _plain,
            ),
            (
                {"proxy": proxy, "verify": ssl.create_default_context(cafile=str(proxy_ca))},
                f"https://{HOST}:{tls_port}/bench",
                _injected,
            ),
        ),
    ]
    rows = []
    for name, (d_opts, d_url, d_check), (p_opts, p_url, p_check) in cases:
        async with (
            httpx.AsyncClient(limits=limits, trust_env=False, **d_opts) as direct,
            httpx.AsyncClient(limits=limits, trust_env=False, **p_opts) as proxied,
        ):
            d, p = await _pair((direct, d_url, d_check), (proxied, p_url, p_check))
        rows.append((name, d, p))
    return rows


def main() -> None:
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="gbx-bench-") as tmp:
        ca = trustme.CA()
        cert = ca.issue_cert(HOST, "127.0.0.1")
        upstream_ca, cert_file, key_file = (
            Path(tmp) / n for n in ("ca.pem", "cert.pem", "key.pem")
        )
        ca.cert_pem.write_to_path(str(upstream_ca))
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        proxy_ca = Path(tmp) / "proxy-ca.pem"
        queue: Queue[Any] = spawn.Queue()
        upstream = spawn.Process(
            target=_upstream_main, args=(queue, str(cert_file), str(key_file)), daemon=True
        )
        upstream.start()
        processes = [upstream]
        try:
            ports = queue.get(timeout=30)
            proxy = spawn.Process(
                target=_proxy_main,
                args=(queue, ports, str(upstream_ca), str(proxy_ca)),
                daemon=True,
            )
            proxy.start()
            processes.append(proxy)
            proxy_port = queue.get(timeout=60)
            rows = asyncio.run(measure(ports[0], ports[1], proxy_port, upstream_ca, proxy_ca))
        finally:
            for process in processes:
                process.terminate()
                process.join(5)
    load = os.getloadavg()[0]
    print(
        f"{CONCURRENCY} concurrent keep-alive clients, {DURATION:.0f} s per path in "
        f"{ROUNDS} alternating rounds; load average {load:.1f} on {os.cpu_count()} CPUs\n"
    )
    header = f"{'scenario':46} {'path':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for name, direct, proxied in rows:
        print(
            f"{name:46} {'direct':8} {direct['rps']:8.0f} {direct['p50']:8.2f} {direct['p99']:8.2f}"
        )
        print(
            f"{'':46} {'proxy':8} {proxied['rps']:8.0f} {proxied['p50']:8.2f} {proxied['p99']:8.2f}"
        )
        print(
            f"{'':46} {'ratio':8} {proxied['rps'] / direct['rps']:8.2f} "
            f"{proxied['p50'] / direct['p50']:8.2f} {proxied['p99'] / direct['p99']:8.2f}"
        )
    print("\nratio = proxy / direct (req/s below 1 and latency above 1 are the proxy's cost)")
    print(json.dumps({name: {"direct": d, "proxy": p} for name, d, p in rows}))


if __name__ == "__main__":
    main()
