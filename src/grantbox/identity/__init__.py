"""Workload identity as a consumer sees it: an async SPIFFE Workload API client.

``WorkloadIdentityClient`` is the only way grantbox obtains JWT- and X.509-SVIDs. It speaks
the standard Workload API, so it works against SPIRE and against grantbox's own local agent
(:mod:`grantbox.identity_agent`) alike. Supervisors and ``proxy run`` import this package, so
it stays small: no web server, no signing keys, no attestation.
"""

from .client import WorkloadIdentityClient
from .errors import IdentityDenied, IdentityError, IdentityUnavailable
from .retry import Backoff
from .socket_uri import ENDPOINT_ENV, parse_socket_uri
from .svid import JwtSvid
from .x509_svid import MalformedX509Svid, X509Svid, read_x509_svid

__all__ = [
    "ENDPOINT_ENV",
    "Backoff",
    "IdentityDenied",
    "IdentityError",
    "IdentityUnavailable",
    "JwtSvid",
    "MalformedX509Svid",
    "WorkloadIdentityClient",
    "X509Svid",
    "parse_socket_uri",
    "read_x509_svid",
]
