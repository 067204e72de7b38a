import pytest

from grantbox.sandbox.init import exit_status
from grantbox.sandbox.spec import LaunchSpec
from grantbox.sandbox.trust import trust_bundle

PEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def test_spec_round_trips_and_repr_hides_env() -> None:
    spec = LaunchSpec(argv=("sh", "-c", "true"), env={"K": "value-123"}, hidden=("/srv/x",))
    assert LaunchSpec.from_bytes(spec.to_bytes()) == spec
    assert "value-123" not in repr(spec)


def test_spec_needs_a_command_and_a_private_ca_path() -> None:
    with pytest.raises(ValueError, match="command"):
        LaunchSpec(argv=(), env={})
    with pytest.raises(ValueError, match="private /tmp"):
        LaunchSpec(argv=("true",), env={}, ca_path="/etc/ca.pem")
    with pytest.raises(ValueError, match="private /tmp"):
        LaunchSpec(argv=("true",), env={}, ca_path="/tmp/../etc/ca.pem")


def test_exit_status_follows_shell_convention() -> None:
    assert exit_status(3 << 8) == 3
    assert exit_status(9) == 128 + 9


def test_trust_bundle_is_roots_then_proxy_ca() -> None:
    bundle = trust_bundle(PEM, roots_pem="ROOTS\n")
    assert bundle.index("ROOTS") < bundle.index("BEGIN CERTIFICATE")
    with pytest.raises(ValueError, match="PEM"):
        trust_bundle("not a cert", roots_pem="")
