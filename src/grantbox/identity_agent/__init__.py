"""The local identity agent: a SPIFFE Workload API server for machines without SPIRE.

It attests callers by their socket peer credentials, mints JWT-SVIDs from a rotating,
persisted keyring and short-lived X.509-SVIDs from a persisted CA, keeps the registry of
workloads (managed over an admin socket), and publishes its keys as OIDC discovery + JWKS
and as a SPIFFE bundle endpoint, so token services such as Keycloak can trust it like a
SPIRE trust domain.
"""

from .admin import AdminError, add_workload_remote, list_workloads_remote, remove_workload_remote
from .agent import DEFAULT_ROTATION_INTERVAL, DEFAULT_SVID_TTL, IdentityAgent
from .keystore import KeystoreError
from .registry import PeerCredentials, Registration, parse_workload_option
from .x509_ca import DEFAULT_X509_SVID_TTL

__all__ = [
    "DEFAULT_ROTATION_INTERVAL",
    "DEFAULT_SVID_TTL",
    "DEFAULT_X509_SVID_TTL",
    "AdminError",
    "IdentityAgent",
    "KeystoreError",
    "PeerCredentials",
    "Registration",
    "add_workload_remote",
    "list_workloads_remote",
    "parse_workload_option",
    "remove_workload_remote",
]
