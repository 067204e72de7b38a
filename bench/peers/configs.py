"""Configuration text for every server of the bench, as plain functions of plain values.

Each proxy does the same work: take a keep-alive request for a 1 KiB file, add one
``Authorization`` header, forward it over a kept-alive upstream connection, relay the
answer. The peers add a fixed header with their own configuration knob; grantbox obtains a
real token (JWT-SVID -> token endpoint) once and injects it from its cache. Nothing logs per
request except nginx, whose access log proves afterwards that each proxy did add the header.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BODY_SIZE = 1024
BODY_PATH = "/1k"
HEADER = "Authorization"
# nginx writes one line per request: the port it was asked on and the header it received.
LOG_FORMAT = '$server_port "$http_authorization"'


def static_token(peer: str) -> str:
    """The fixed bearer value a peer proxy adds (grantbox's comes from the token endpoint)."""
    return f"Bearer {peer}-static-token"


@dataclass(frozen=True)
class NginxSite:
    port: int
    tls: bool = False


def nginx_conf(
    run_dir: Path,
    sites: Sequence[NginxSite],
    *,
    cert: Path,
    key: Path,
    user: str | None,
) -> str:
    """One worker (the machine has few cores and every path shares it), keep-alive without
    a request cap, the 1 KiB body served from the run directory, a buffered access log."""
    listens = "\n".join(
        f"    listen 127.0.0.1:{site.port}{' ssl' if site.tls else ''};" for site in sites
    )
    user_line = f"user {user};\n" if user else ""
    return f"""{user_line}worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
pid {run_dir}/nginx.pid;
error_log {run_dir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  log_format bench '{LOG_FORMAT}';
  access_log {run_dir}/access.log bench buffer=256k flush=1s;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  ssl_certificate {cert};
  ssl_certificate_key {key};
  ssl_session_cache shared:bench:1m;
  server {{
{listens}
    root {run_dir}/www;
    location / {{ }}
  }}
}}
"""


def squid_conf(
    run_dir: Path,
    *,
    http_port: int,
    bump_port: int,
    ca_cert: Path,
    ca_key: Path,
    upstream_ca: Path,
    user: str | None,
) -> str:
    """Squid as a plain forward proxy (``request_header_add``) on one port and an ssl-bump
    interceptor on another; no cache, no access log, no Via header, memory only."""
    user_line = f"cache_effective_user {user}\n" if user else ""
    return f"""{user_line}http_port 127.0.0.1:{http_port}
http_port 127.0.0.1:{bump_port} ssl-bump tls-cert={ca_cert} tls-key={ca_key} \
generate-host-certificates=on dynamic_cert_mem_cache_size=4MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s {run_dir}/ssl_db -M 4MB
sslcrtd_children 4 startup=1 idle=1
tls_outgoing_options cafile={upstream_ca}
acl step1 at_step SslBump1
acl step2 at_step SslBump2
ssl_bump peek step1
ssl_bump stare step2
ssl_bump bump all
http_access allow all
request_header_add {HEADER} "{static_token("squid")}" all
via off
forwarded_for delete
cache deny all
cache_mem 8 MB
access_log none
cache_store_log none
cache_log {run_dir}/cache.log
pid_filename {run_dir}/squid.pid
coredump_dir {run_dir}
max_filedescriptors 16384
icp_port 0
htcp_port 0
shutdown_lifetime 1 seconds
client_persistent_connections on
server_persistent_connections on
"""


def tinyproxy_conf(run_dir: Path, *, port: int, user: str | None, group: str | None) -> str:
    """tinyproxy with ``AddHeader``; MaxClients leaves room for the idle-connection test."""
    identity = (f"User {user}\n" if user else "") + (f"Group {group}\n" if group else "")
    return f"""{identity}Port {port}
Listen 127.0.0.1
Timeout 600
MaxClients 2048
LogFile "{run_dir}/tinyproxy.log"
LogLevel Error
PidFile "{run_dir}/tinyproxy.pid"
DisableViaHeader Yes
AddHeader "{HEADER}" "{static_token("tinyproxy")}"
"""


def mitmproxy_addon() -> str:
    """The smallest mitmproxy addon that does the same work: one header on every request."""
    return f'''"""Adds one fixed header to every request, as the other peers do."""


def requestheaders(flow):
    flow.request.headers["{HEADER}"] = "{static_token("mitmproxy")}"
'''


def grantbox_profile(
    *, profile_id: str, token_endpoint: str, endpoints: Sequence[tuple[str, int]]
) -> dict[str, Any]:
    """A provider profile binding ``(host, port)`` endpoints of the bench's nginx with a
    token grant. Hosts are loopback names (the cleartext rule allows tokens over plain HTTP
    only there); whether a port speaks TLS is up to the client, the proxy intercepts it."""
    listed: list[dict[str, Any]] = []
    for host, port in endpoints:
        listed.append(
            {
                "host": host,
                "port": port,
                "protocol": "rest",
                "access": "read-only",
                "allowed_ips": ["127.0.0.1"],
            }
        )
    return {
        "id": profile_id,
        "credentials": [
            {
                "name": "access_token",
                "auth_style": "bearer",
                "token_grant": {
                    "token_endpoint": token_endpoint,
                    "client_assertion_type": (
                        "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
                    ),
                    "audience": "bench",
                },
            }
        ],
        "endpoints": listed,
    }


def grantbox_proxy_config(profile: dict[str, Any], *, sandbox_id: str) -> dict[str, Any]:
    """The ``grantbox proxy run --config`` document: one profile, one provider attached."""
    return {
        "sandbox_id": sandbox_id,
        "profiles": [profile],
        "providers": [{"name": "bench", "profile": profile["id"]}],
    }
