import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.sandbox.environment import (
    CA_TRUST_VARIABLES,
    MANAGED_NAMES,
    NO_PROXY_VALUE,
    agent_environment,
    declared_variable_problem,
    is_internal_variable,
)


def test_environment_has_proxy_and_trust_and_nothing_inherited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///run/x.sock")
    monkeypatch.setenv("GRANTBOX_TOKEN", "secret")
    env = agent_environment(proxy_port=3128, ca_bundle="/tmp/ca.pem")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        assert env[name] == env[name.lower()] == "http://127.0.0.1:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == "127.0.0.1,::1"
    assert "localhost" not in NO_PROXY_VALUE
    for name in CA_TRUST_VARIABLES:
        assert env[name] == "/tmp/ca.pem"
    assert not any(is_internal_variable(name) for name in env)
    assert set(env) <= MANAGED_NAMES | {"LANG"}


def test_declared_variables_pass_through() -> None:
    env = agent_environment(proxy_port=8080, ca_bundle="/tmp/ca.pem", declared={"MODEL": "x"})
    assert env["MODEL"] == "x"
    assert env["HTTP_PROXY"] == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    "name",
    [
        "SPIFFE_ENDPOINT_SOCKET",
        "spiffe_x",
        "GRANTBOX_TOKEN",
        "HTTPS_PROXY",
        "https_proxy",
        "No_Proxy",
        "SSL_CERT_FILE",
        "PATH",
        "1BAD",
        "A-B",
        "",
    ],
)
def test_declared_variables_cannot_override_or_smuggle(name: str) -> None:
    assert declared_variable_problem(name) is not None
    with pytest.raises(ValueError, match=r"reserved|cannot be overridden|not a valid"):
        agent_environment(proxy_port=3128, ca_bundle="/tmp/ca.pem", declared={name: "v"})


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_proxy_port_must_be_valid(port: int) -> None:
    with pytest.raises(ValueError, match="port"):
        agent_environment(proxy_port=port, ca_bundle="/tmp/ca.pem")


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
        st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=10),
        max_size=8,
    )
)
def test_any_accepted_declaration_never_changes_managed_values(declared: dict[str, str]) -> None:
    try:
        env = agent_environment(proxy_port=3128, ca_bundle="/tmp/ca.pem", declared=declared)
    except ValueError:
        assert any(declared_variable_problem(n) for n in declared)
        return
    base = agent_environment(proxy_port=3128, ca_bundle="/tmp/ca.pem")
    for name, value in base.items():
        if name != "LANG":
            assert env[name] == value
    assert not any(is_internal_variable(name) for name in env)
