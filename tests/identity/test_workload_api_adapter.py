"""py-spiffe keeps its generated stubs in a private module; this fails loudly if they move."""

from __future__ import annotations

import grpc

from grantbox.identity import workload_api as wapi

RPCS = ("FetchX509SVID", "FetchX509Bundles", "FetchJWTSVID", "FetchJWTBundles", "ValidateJWTSVID")


def test_private_stub_modules_still_exist() -> None:
    from spiffe._proto import workload_pb2, workload_pb2_grpc

    assert wapi.JWTSVIDRequest is workload_pb2.JWTSVIDRequest
    assert wapi.WorkloadApiStub is workload_pb2_grpc.SpiffeWorkloadAPIStub
    assert wapi.add_servicer_to_server is workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server


def test_service_has_the_spec_rpcs_on_the_unpackaged_wire_names() -> None:
    from spiffe._proto import workload_pb2

    descriptor = workload_pb2.DESCRIPTOR.services_by_name[wapi.SERVICE_NAME]
    assert descriptor.full_name == "SpiffeWorkloadAPI"
    assert {m.name for m in descriptor.methods} >= set(RPCS)
    stub = wapi.WorkloadApiStub(grpc.insecure_channel("unix:/nonexistent"))
    for rpc in RPCS:
        assert hasattr(stub, rpc)
        assert hasattr(wapi.WorkloadApiServicer, rpc)


def test_message_fields_we_rely_on() -> None:
    request = wapi.JWTSVIDRequest(audience=["a", "b"], spiffe_id="spiffe://td/x")
    assert list(request.audience) == ["a", "b"]
    response = wapi.JWTSVIDResponse(svids=[wapi.JWTSVID(spiffe_id="spiffe://td/x", svid="t")])
    assert response.svids[0].svid == "t"
    bundles = wapi.JWTBundlesResponse(bundles={"spiffe://td": b"{}"})
    assert bundles.bundles["spiffe://td"] == b"{}"
    validate = wapi.ValidateJWTSVIDRequest(audience="a", svid="t")
    assert validate.audience == "a"


def test_security_header_is_the_spec_value() -> None:
    assert wapi.SECURITY_METADATA == (("workload.spiffe.io", "true"),)
