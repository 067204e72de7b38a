"""Workload identity: an async SPIFFE Workload API client and the local identity agent.

The client (``WorkloadIdentityClient``) is the only way grantbox obtains JWT-SVIDs; it
speaks the standard Workload API, so it works against SPIRE in a cluster and against the
local ``IdentityAgent`` on one machine.
"""

from .admin import AdminError, add_workload_remote, list_workloads_remote, remove_workload_remote
from .agent import DEFAULT_ROTATION_INTERVAL, DEFAULT_SVID_TTL, IdentityAgent
from .client import WorkloadIdentityClient
from .errors import IdentityDenied, IdentityError, IdentityUnavailable
from .keystore import KeystoreError
from .registry import PeerCredentials, Registration, parse_workload_option
from .retry import Backoff
from .socket_uri import ENDPOINT_ENV, parse_socket_uri
from .svid import JwtSvid

__all__ = [
    "DEFAULT_ROTATION_INTERVAL",
    "DEFAULT_SVID_TTL",
    "ENDPOINT_ENV",
    "AdminError",
    "Backoff",
    "IdentityAgent",
    "IdentityDenied",
    "IdentityError",
    "IdentityUnavailable",
    "JwtSvid",
    "KeystoreError",
    "PeerCredentials",
    "Registration",
    "WorkloadIdentityClient",
    "add_workload_remote",
    "list_workloads_remote",
    "parse_socket_uri",
    "parse_workload_option",
    "remove_workload_remote",
]
