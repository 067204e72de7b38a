"""The policy's ``filesystem`` and ``limits`` sections: what is refused, and why."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from grantbox.profiles import (
    EffectiveConfig,
    SandboxPolicy,
    build_effective_config,
    filesystem_path_problem,
    validate_policy,
)


def _problems(document: dict[str, object]) -> list[str]:
    return [
        f"{d.field}: {d.message}" for d in validate_policy(SandboxPolicy.model_validate(document))
    ]


@pytest.mark.parametrize(
    ("path", "writable", "reason"),
    [
        ("", False, "empty"),
        ("srv/data", False, "not absolute"),
        ("/srv/../etc", False, "'..'"),
        ("/srv//data", False, "not normalised"),
        ("/srv/data/", False, "not normalised"),
        ("/srv/./data", False, "not normalised"),
        ("/srv/da\nta", False, "control character"),
        ("/srv/da\x00ta", False, "control character"),
        ("/", False, "whole host"),
        ("/proc", False, "sandbox's own"),
        ("/proc/1/root", True, "sandbox's own"),
        ("/sys/kernel", False, "sandbox's own"),
        ("/dev", True, "sandbox's own"),
        ("/tmp/x", False, "sandbox's own"),
        ("/run", False, "never shown"),
        ("/var/run", False, "never shown"),
        ("/run/grantbox/up-1", False, "never shown"),
        ("/run/lock", True, "shared by every user"),
        ("/var/tmp", False, "shared by every user"),
        ("/dev/shm/x", True, "sandbox's own"),
        ("/usr", True, "read-only"),
        ("/etc", True, "read-only"),
        ("/home", True, "read-only"),
        ("/var", True, "read-only"),
    ],
)
def test_refused_paths(path: str, writable: bool, reason: str) -> None:
    problem = filesystem_path_problem(path, writable=writable)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    ("path", "writable"),
    [
        ("/srv/data", True),
        ("/usr", False),
        ("/etc", False),
        ("/home/me/src", True),
        ("/opt", False),
    ],
)
def test_accepted_paths(path: str, writable: bool) -> None:
    assert filesystem_path_problem(path, writable=writable) is None


@given(st.text(max_size=40))
def test_every_accepted_path_is_absolute_normal_and_printable(path: str) -> None:
    for writable in (False, True):
        if filesystem_path_problem(path, writable=writable) is None:
            assert path.startswith("/") and path.isprintable()
            assert os.path.normpath(path) == path and ".." not in path.split("/")


def test_diagnostics_name_the_field() -> None:
    problems = _problems(
        {
            "filesystem": {
                "read_only": ["/srv/a", "/srv/a"],
                "read_write": ["/srv/a", "/proc"],
            },
            "limits": {"processes": 2, "memory_mib": 4, "cpus": 0},
        }
    )
    assert problems == [
        "filesystem.read_only[1]: '/srv/a' is listed twice",
        "filesystem.read_write[1]: /proc is the sandbox's own; it cannot come from the host",
        "filesystem.read_write[0]: '/srv/a' is also listed read-only",
        "limits.processes: must be between 8 and 1000000",
        "limits.memory_mib: must be between 32 and 4194304",
        "limits.cpus: must be between 0.01 and 1024",
    ]


def test_unknown_fields_and_modes_are_errors() -> None:
    with pytest.raises(ValidationError):
        SandboxPolicy.model_validate({"filesystem": {"landlock": "sometimes"}})
    with pytest.raises(ValidationError):
        SandboxPolicy.model_validate({"filesystem": {"include_workdir": True}})
    with pytest.raises(ValidationError):
        SandboxPolicy.model_validate({"limits": {"processes": "many"}})
    with pytest.raises(ValidationError):
        SandboxPolicy.model_validate({"limits": {"processes": 1.5}})


def test_a_good_policy_has_no_diagnostics_and_reaches_the_supervisor() -> None:
    document = {
        "filesystem": {
            "read_only": ["/srv/models"],
            "read_write": ["/srv/work"],
            "landlock": "hard_requirement",
        },
        "limits": {"processes": 64, "memory_mib": 512, "cpus": 0.5},
    }
    policy = SandboxPolicy.model_validate(document)
    assert validate_policy(policy) == []
    config = build_effective_config("sb1", policy, [], agent_uid=1_900_000_003)
    again = EffectiveConfig.from_dict(config.to_dict())
    assert again.policy.filesystem == policy.filesystem
    assert again.policy.limits == policy.limits
    assert again.agent_uid == 1_900_000_003
    plain = build_effective_config("sb1", SandboxPolicy(), [])
    assert plain.revision != config.revision
    assert SandboxPolicy().canonical_json() == "{}"  # old policies keep their revision


@pytest.mark.parametrize("uid", [0, -1, True, "7", 2**32])
def test_a_config_with_a_bad_agent_uid_is_refused(uid: object) -> None:
    data = build_effective_config("sb1", SandboxPolicy(), []).to_dict()
    data["agent_uid"] = uid
    with pytest.raises(ValueError, match="agent_uid"):
        EffectiveConfig.from_dict(data)
