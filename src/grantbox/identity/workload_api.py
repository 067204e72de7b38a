"""The one place that touches py-spiffe's generated Workload API stubs.

py-spiffe ships the stubs in a private module (``spiffe._proto``). Every other module imports
them from here, so an upgrade that moves them breaks exactly one import, and
``tests/identity/test_workload_api_adapter.py`` fails loudly when it does.
"""

from __future__ import annotations

from typing import Any

from spiffe._proto import workload_pb2 as messages
from spiffe._proto import workload_pb2_grpc as services

SECURITY_HEADER = "workload.spiffe.io"
"""Metadata key every Workload API request must carry (SPIFFE Workload Endpoint §4)."""
SECURITY_HEADER_VALUE = "true"
SECURITY_METADATA: tuple[tuple[str, str]] = ((SECURITY_HEADER, SECURITY_HEADER_VALUE),)

SERVICE_NAME = "SpiffeWorkloadAPI"

JWTSVIDRequest: Any = messages.JWTSVIDRequest
JWTSVIDResponse: Any = messages.JWTSVIDResponse
JWTSVID: Any = messages.JWTSVID
JWTBundlesRequest: Any = messages.JWTBundlesRequest
JWTBundlesResponse: Any = messages.JWTBundlesResponse
ValidateJWTSVIDRequest: Any = messages.ValidateJWTSVIDRequest
ValidateJWTSVIDResponse: Any = messages.ValidateJWTSVIDResponse
X509SVIDRequest: Any = messages.X509SVIDRequest
X509SVIDResponse: Any = messages.X509SVIDResponse
X509SVID: Any = messages.X509SVID
X509BundlesRequest: Any = messages.X509BundlesRequest
X509BundlesResponse: Any = messages.X509BundlesResponse

WorkloadApiStub: Any = services.SpiffeWorkloadAPIStub
WorkloadApiServicer: Any = services.SpiffeWorkloadAPIServicer
add_servicer_to_server: Any = services.add_SpiffeWorkloadAPIServicer_to_server

__all__ = [
    "JWTSVID",
    "SECURITY_HEADER",
    "SECURITY_HEADER_VALUE",
    "SECURITY_METADATA",
    "SERVICE_NAME",
    "X509SVID",
    "JWTBundlesRequest",
    "JWTBundlesResponse",
    "JWTSVIDRequest",
    "JWTSVIDResponse",
    "ValidateJWTSVIDRequest",
    "ValidateJWTSVIDResponse",
    "WorkloadApiServicer",
    "WorkloadApiStub",
    "X509BundlesRequest",
    "X509BundlesResponse",
    "X509SVIDRequest",
    "X509SVIDResponse",
    "add_servicer_to_server",
]
