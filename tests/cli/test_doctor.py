"""``grantbox doctor`` judges plain facts: each verdict, and the fix it suggests."""

from __future__ import annotations

import dataclasses

from click.testing import CliRunner

from grantbox.cli import cli
from grantbox.cli.doctor import USERNS_KNOBS, Facts, diagnose

GOOD = Facts(
    python=(3, 11),
    root=True,
    userns_knobs={},
    isolation_problem=None,
    cgroup2=True,
    cgroup_controllers=("cpu", "memory", "pids"),
    seccomp=True,
    lsm=("lockdown", "landlock"),
    curl="/usr/bin/curl",
    state_dir="/var/lib/grantbox",
    state_dir_mode=0o700,
)


def _failed(facts: Facts) -> dict[str, str]:
    return {f.check: f.fix for f in diagnose(facts) if not f.ok}


def test_a_good_machine_has_nothing_to_fix() -> None:
    assert _failed(GOOD) == {}


def test_rootless_without_user_namespaces_names_each_sysctl() -> None:
    facts = dataclasses.replace(
        GOOD,
        root=False,
        userns_knobs={USERNS_KNOBS[0]: "0", USERNS_KNOBS[2]: "1"},
        isolation_problem="grantbox needs root or unprivileged user namespaces",
    )
    failed = _failed(facts)
    assert set(failed) == {"privileges", "namespaces"}
    assert "kernel.unprivileged_userns_clone=1" in failed["privileges"]
    assert "apparmor_restrict_unprivileged_userns=0" in failed["privileges"]


def test_each_missing_piece_has_its_own_fix() -> None:
    facts = dataclasses.replace(
        GOOD,
        python=(3, 10),
        cgroup2=False,
        seccomp=False,
        lsm=(),
        curl=None,
        state_dir_mode=0o755,
    )
    failed = _failed(facts)
    assert set(failed) == {"python", "cgroups", "seccomp", "landlock", "curl", "state directory"}
    assert "apt-get install curl" in failed["curl"]
    assert "chmod 700 /var/lib/grantbox" in failed["state directory"]
    required = {f.check for f in diagnose(facts) if not f.ok and f.required}
    assert required == {"python", "seccomp", "state directory"}


def test_the_command_reports_this_machine_and_exits_by_its_verdict() -> None:
    result = CliRunner().invoke(cli, ["doctor", "-o", "json"])
    assert result.exit_code in (0, 1)
    assert '"check": "namespaces"' in result.stdout
    table = CliRunner().invoke(cli, ["doctor"])
    assert table.stdout.splitlines()[0].startswith("grantbox doctor on ")
    assert table.exit_code == result.exit_code
