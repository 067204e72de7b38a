"""Address validation (DESIGN §3.5 #6) and the proxy's own name resolution."""

from __future__ import annotations

import ipaddress

import pytest

from grantbox.proxy import SystemResolver, address_problem, parse_overrides, validate_addresses

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    ("address", "allowed_ips", "refused"),
    [
        ("93.184.216.34", [], False),
        ("10.1.2.3", [], False),
        ("127.0.0.1", [], True),
        ("::1", [], True),
        ("127.0.0.1", ["127.0.0.1"], False),
        ("127.0.0.2", ["127.0.0.1/32"], True),
        ("127.0.0.2", ["127.0.0.0/8"], False),
        ("::ffff:127.0.0.1", [], True),
        ("::ffff:127.0.0.1", ["127.0.0.1"], False),
        ("169.254.169.254", [], True),
        ("169.254.169.254", ["169.254.0.0/16"], True),
        ("169.254.1.1", ["0.0.0.0/0"], True),
        ("fe80::1", ["::/0"], True),
        ("fd00:ec2::254", ["::/0"], True),
        ("100.100.100.200", ["0.0.0.0/0"], True),
        ("::ffff:169.254.169.254", ["0.0.0.0/0"], True),
        ("0.0.0.0", ["0.0.0.0/0"], True),
        ("::", ["::/0"], True),
        ("224.0.0.1", ["0.0.0.0/0"], True),
        ("255.255.255.255", ["0.0.0.0/0"], True),
        ("10.1.2.3", ["10.0.0.0/8"], False),
        ("10.1.2.3", ["192.168.0.0/16"], True),
        # "any address" does not list loopback: only a loopback network does
        ("127.0.0.1", ["0.0.0.0/0"], True),
        ("127.0.0.1", ["64.0.0.0/2"], True),
        ("::1", ["::/0"], True),
        ("::ffff:127.0.0.1", ["0.0.0.0/0"], True),
        ("127.0.0.5", ["127.0.0.0/8"], False),
        ("127.0.0.1", ["0.0.0.0/0", "127.0.0.1/32"], False),
        ("::1", ["::1/128"], False),
        ("93.184.216.34", ["0.0.0.0/0"], False),
    ],
)
def test_address_problem(address: str, allowed_ips: list[str], refused: bool) -> None:
    assert (address_problem(ip(address), allowed_ips) is not None) is refused


def test_a_poisoned_answer_is_refused_whole() -> None:
    usable, problem = validate_addresses([ip("93.184.216.34"), ip("169.254.169.254")], [])
    assert usable == () and problem is not None and "metadata" in problem


def test_addresses_outside_the_policy_are_filtered_not_fatal() -> None:
    usable, problem = validate_addresses([ip("::1"), ip("127.0.0.1")], ["127.0.0.1/32"])
    assert usable == (ip("127.0.0.1"),) and problem is None
    usable, problem = validate_addresses([ip("127.0.0.1")], [])
    assert usable == () and problem is not None and "loopback" in problem
    assert validate_addresses([], [])[1] == "the name resolved to no address"


def test_overrides_parse() -> None:
    table = parse_overrides(["Alpha.Example=127.0.0.1", "beta.example=::1,10.0.0.1"])
    assert table == {
        "alpha.example": (ip("127.0.0.1"),),
        "beta.example": (ip("::1"), ip("10.0.0.1")),
    }
    for bad in ["alpha.example", "=1.2.3.4", "a=not-an-ip"]:
        with pytest.raises(ValueError):  # noqa: PT011 - two different ValueErrors
            parse_overrides([bad])


async def test_system_resolver_answers_localhost_literals_and_overrides_itself() -> None:
    resolver = SystemResolver(parse_overrides(["alpha.example=10.9.8.7"]))
    assert await resolver.resolve("alpha.example", 443) == (ip("10.9.8.7"),)
    assert await resolver.resolve("ALPHA.EXAMPLE.", 443) == (ip("10.9.8.7"),)
    assert set(await resolver.resolve("api.localhost", 80)) == {ip("127.0.0.1"), ip("::1")}
    assert await resolver.resolve("[::1]", 80) == (ip("::1"),)
    assert await resolver.resolve("192.0.2.5", 80) == (ip("192.0.2.5"),)
