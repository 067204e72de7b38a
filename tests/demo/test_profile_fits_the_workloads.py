"""The demo profile and the demo workloads agree: every token request the profile makes
the proxy send is one the issuer grants, for an SVID audience the issuer accepts, and the
services the profile names are where the demo starts them."""

from __future__ import annotations

import pytest
from spiffe_assertion import JWT_SPIFFE
from token_request import TokenRequest, check_grant

from grantbox.demo import DemoPorts, find_example_dir
from grantbox.profiles import (
    Profile,
    expand_bindings,
    has_errors,
    load_file,
    select_binding,
    validate_profile,
)

ISSUER_AUDIENCES = ("alpha", "beta")  # issuer.py's default --audience set


@pytest.fixture(scope="module")
def profile() -> Profile:
    result = load_file(find_example_dir() / "provider-profile.yaml")
    assert not result.diagnostics
    (loaded,) = result.profiles
    return loaded.profile


def test_profile_validates(profile: Profile) -> None:
    assert not has_errors(validate_profile(profile))


@pytest.mark.parametrize("service", ["alpha", "beta"])
def test_each_service_binding_requests_what_the_issuer_grants(
    profile: Profile, service: str
) -> None:
    ports = DemoPorts()
    bindings = expand_bindings([("demo", profile)]).bindings
    binding = select_binding(bindings, f"{service}.localhost", ports.of(service), "/hello")
    assert binding is not None
    issuer = f"http://127.0.0.1:{ports.issuer}"  # what issuer.py derives from its --listen
    assert binding.token_endpoint == f"{issuer}/token"
    assert binding.svid_audience == issuer
    assert binding.assertion_type == JWT_SPIFFE
    assert binding.audience == service
    request = TokenRequest(assertion="x", audience=binding.audience, scopes=binding.scopes)
    check_grant(request, ISSUER_AUDIENCES)
