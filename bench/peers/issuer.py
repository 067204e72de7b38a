"""A loopback OAuth token endpoint for the bench, as its own process.

It is the test suite's token endpoint (``tests/support/token_endpoint.py``): it verifies
each JWT-SVID client assertion against the identity agent's JWKS (found through OIDC
discovery at ``--oidc``) before issuing a token, so grantbox's first request through it
pays for a real grant. Tokens live an hour, so the proxy answers every later request from
its cache. Prints ``token endpoint: <url> issuer: <issuer>`` when it serves and, on
SIGTERM, ``token requests: <n>`` (the bench checks that the cache kept it at one).

    python -m bench.peers.issuer --oidc http://127.0.0.1:PORT --trust-domain bench.example
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from tests.support.token_endpoint import Behaviour, running_token_endpoint

TOKEN_LIFETIME = 3600


async def serve(oidc_url: str, trust_domain: str) -> None:
    async with running_token_endpoint(oidc_url=oidc_url, trust_domain=trust_domain) as endpoint:
        endpoint.behave(Behaviour.grant(expires_in=TOKEN_LIFETIME))
        print(f"token endpoint: {endpoint.token_url} issuer: {endpoint.issuer}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print(f"token requests: {endpoint.request_count}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--oidc", required=True, help="the identity agent's OIDC base URL")
    parser.add_argument("--trust-domain", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.oidc, args.trust_domain))


if __name__ == "__main__":
    main()
