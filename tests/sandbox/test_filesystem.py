"""DESIGN §3.5 #8: the agent's filesystem view holds only what its policy allows.

Pure parts (the plan, the flags a remount must keep, the generated user list) are checked
as data; the view itself from inside real sandboxes with ordinary tools.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from grantbox.sandbox import filesystem
from grantbox.sandbox import syscalls as sc
from grantbox.sandbox.network import NetworkSetupFailed, create_sandbox_network
from tests.support.sandbox_run import SandboxRunner
from tests.support.subordinate_ids import have_helpers, subordinate_ids

REPO = Path(__file__).resolve().parents[2]
root_only = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


def test_plan_puts_parents_first_and_policy_paths_replace_system_ones() -> None:
    entries = filesystem.plan(["/srv/data/ro", "/usr"], ["/srv/data"])
    paths = [e.path for e in entries]
    assert paths.index("/srv/data") < paths.index("/srv/data/ro")
    assert paths.index("/usr") < paths.index("/etc/ssl")
    by_path = {e.path: e for e in entries}
    assert by_path["/srv/data"].writable and by_path["/srv/data"].required
    assert not by_path["/srv/data/ro"].writable
    assert by_path["/usr"].required and not by_path["/usr"].writable
    assert not by_path["/etc/ssl"].required


def test_no_host_secret_or_shared_place_is_in_the_system_list() -> None:
    for path in filesystem.SYSTEM_READ_ONLY:
        for refused in ("/home", "/root", "/srv", "/opt", "/run", "/var", "/tmp", "/work"):
            assert not (path == refused or path.startswith(refused + "/")), path
    assert "/etc/passwd" not in filesystem.SYSTEM_READ_ONLY  # written fresh instead
    assert "/etc/shadow" not in filesystem.SYSTEM_READ_ONLY


def test_remount_keeps_every_flag_the_mount_has() -> None:
    flags = os.ST_RDONLY | os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_RELATIME
    assert filesystem.mount_flags(flags) == (
        sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_RELATIME
    )
    assert filesystem.mount_flags(os.ST_NOATIME | os.ST_NODIRATIME) == (
        sc.MS_NOATIME | sc.MS_NODIRATIME
    )
    assert filesystem.mount_flags(0) == 0


def test_generated_user_list_names_only_root_nobody_and_the_agent() -> None:
    passwd, group = filesystem.passwd_text(1_900_000_007, 1_900_000_007)
    names = [line.split(":")[0] for line in passwd.splitlines()]
    assert names == ["root", "nobody", "sandbox"]
    assert "sandbox:x:1900000007:1900000007:" in passwd
    assert group.splitlines()[-1] == "sandbox:x:1900000007:"
    passwd, _ = filesystem.passwd_text(65534, 65534)
    assert [line.split(":")[0] for line in passwd.splitlines()] == ["root", "nobody"]


@pytest.fixture
def host_tree() -> Iterator[Path]:
    """An operator-like tree outside /tmp with a readable secret and a writable corner."""
    path = Path(tempfile.mkdtemp(prefix="gbx-fs-", dir="/srv"))
    os.chmod(path, 0o755)  # noqa: S103 - readable by nobody unless the view hides it
    (path / "secret.txt").write_text("host-secret\n")
    os.chmod(path / "secret.txt", 0o644)
    (path / "shared").mkdir()
    os.chmod(path / "shared", 0o777)  # noqa: S103 - writable by nobody unless hidden/ro
    (path / "work").mkdir()
    os.chown(path / "work", 65534, 65534)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class TestView:
    pytestmark = root_only

    async def test_nothing_of_the_host_beyond_the_system_is_visible(
        self, runner: SandboxRunner, host_tree: Path
    ) -> None:
        marker = f"host-tmp-{uuid.uuid4().hex}"
        Path("/tmp", marker).write_text("x")
        Path("/var/tmp", marker).write_text("x")
        places = [
            "/home", "/root", "/srv", "/opt", "/run", "/var/run", "/run/lock", "/var/lock",
            "/mnt", "/media", "/boot", str(host_tree), str(REPO), "/var/lib", "/etc/shadow",
        ]  # fmt: skip
        try:
            result = await runner.sh(
                "for p in " + " ".join(places) + "; do ls -d $p 2>/dev/null && echo SEEN; done;"
                " ls -A /tmp /var/tmp/ /dev/shm; cat /etc/passwd"
            )
            top = await runner.run(["ls", "-A", "/"])
        finally:
            Path("/tmp", marker).unlink()
            Path("/var/tmp", marker).unlink()
        assert result.code == 0, result
        assert "SEEN" not in result.out, result.out
        assert marker not in result.out
        assert "host-secret" not in result.out
        allowed = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin"}
        assert set(top.out.split()) <= allowed | {"sys", "tmp", "usr", "var"}, top.out
        users = {line.split(":")[0] for line in result.out.splitlines() if line.count(":") >= 6}
        assert users == {"root", "nobody"}

    async def test_programs_still_work_and_the_ca_bundle_is_there(
        self, runner: SandboxRunner
    ) -> None:
        script = (
            'python3 -c "import ssl, json; print(json.dumps(ssl.get_default_verify_paths()[0]))";'
            " curl --version >/dev/null && echo curl-ok; echo hi | awk '{print $1\"-awk\"}';"
            " grep -c 'BEGIN CERTIFICATE' \"$SSL_CERT_FILE\"; ls /etc/ssl/certs | head -1;"
            " echo x > /tmp/f && cat /tmp/f; echo y > /dev/null && echo devnull-ok; ls /dev/pts"
        )
        result = await runner.sh(script)
        assert result.code == 0, result
        assert "curl-ok" in result.out and "hi-awk" in result.out and "devnull-ok" in result.out
        assert "\n1\n" in result.out  # the test CA in the private bundle

    async def test_system_and_read_only_paths_cannot_be_written(
        self, runner: SandboxRunner, host_tree: Path
    ) -> None:
        shared = host_tree / "shared"
        script = (
            f"cat {host_tree}/secret.txt; touch {shared}/planted && exit 10;"
            " touch /usr/planted /etc/planted /planted 2>&1 && exit 11;"
            " mkdir /newdir && exit 12; echo done"
        )
        result = await runner.sh(script, read_only=(str(host_tree),), root=True)
        assert result.code == 0, result
        assert "host-secret" in result.out
        assert not (shared / "planted").exists()
        assert "Read-only file system" in result.err

    async def test_read_write_paths_are_shared_with_the_host_and_nothing_else(
        self, runner: SandboxRunner, host_tree: Path
    ) -> None:
        work = host_tree / "work"
        script = f"echo from-agent > {work}/out; ls {host_tree} 2>&1; cat {work}/out"
        result = await runner.sh(script, read_write=(str(work),))
        assert result.code == 0, result
        assert (work / "out").read_text() == "from-agent\n"
        assert "secret.txt" not in result.out  # the parent is not shown, only the listed path

    async def test_a_hidden_directory_inside_a_shown_path_stays_empty(
        self, runner: SandboxRunner, host_tree: Path
    ) -> None:
        hidden = host_tree / "shared"
        (hidden / "agent.sock").write_text("not for the agent")
        result = await runner.sh(
            f"ls -A {hidden}; cat {hidden}/agent.sock && exit 10; exit 0",
            read_only=(str(host_tree),),
            hidden=(str(hidden),),
        )
        assert result.code == 0, result
        assert "agent.sock" not in result.out

    async def test_missing_policy_path_is_reported_and_not_shown(
        self, runner: SandboxRunner
    ) -> None:
        result = await runner.sh("ls /srv/grantbox-nope; exit 0", read_only=("/srv/grantbox-nope",))
        assert result.code == 0
        assert "/srv/grantbox-nope does not exist on this host; not shown" in result.err

    async def test_a_path_through_a_shown_link_is_refused(self, runner: SandboxRunner) -> None:
        # /bin is a link on merged-/usr systems; elsewhere the test has nothing to prove.
        if not os.path.islink("/bin"):
            pytest.skip("/bin is not a symbolic link here")
        result = await runner.run(["true"], read_only=("/bin/sh",))
        assert result.code == 125
        assert "/bin is a symbolic link; list its target" in result.err

    async def test_nothing_of_the_host_in_the_user_namespace_path_either(
        self, rootless_runner: SandboxRunner, host_tree: Path
    ) -> None:
        script = (
            f"ls {host_tree} && exit 10; ls /home /root /run && exit 11;"
            " touch /usr/planted && exit 12; mount -o remount,rw /usr && exit 13;"
            " touch /dev/planted && exit 14; exit 0"
        )
        result = await rootless_runner.sh(script)
        assert result.code == 0, result
        assert not Path("/usr/planted").exists()


@pytest.mark.skipif(not have_helpers(), reason="newuidmap/newgidmap missing (Debian uidmap)")
class TestRootlessAgentIsNotTheOperator:
    """#12 (high): rootless, the agent runs as a subordinate id, never as the operator."""

    pytestmark = root_only

    async def test_the_agent_owns_nothing_of_the_operators(self, host_tree: Path) -> None:
        with subordinate_ids("root", 3_000_000) as ids:
            sub = ids.start + 5
            network = create_sandbox_network(3128, rootless=True, agent_ids=(sub, sub))
            try:
                runner = SandboxRunner(network)
                os.chmod(host_tree / "shared", 0o1777)  # noqa: S103 - sticky, like /tmp
                operator_file = host_tree / "shared" / "operator.txt"
                operator_file.write_text("operator's\n")
                script = (
                    f"id -u; id -g; echo agent > {host_tree}/shared/by-agent;"
                    f" echo tampered > {operator_file} && exit 10;"
                    f" rm -f {operator_file} && exit 11;"
                    f" touch {host_tree}/work/x && exit 12; exit 0"
                )
                result = await runner.sh(
                    script,
                    read_write=(str(host_tree / "shared"), str(host_tree / "work")),
                )
            finally:
                network.close()
        assert result.code == 0, result
        assert result.out.split() == ["1", "1"]
        assert operator_file.read_text() == "operator's\n"
        made = (host_tree / "shared" / "by-agent").stat()
        assert (made.st_uid, made.st_gid) == (sub, sub)

    def test_a_range_the_operator_does_not_own_is_refused_clearly(self) -> None:
        with pytest.raises(NetworkSetupFailed, match="newuidmap refused"):
            create_sandbox_network(3128, rootless=True, agent_ids=(3_500_000, 3_500_000))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.root
async def test_a_listed_link_inside_a_shown_directory_is_left_as_it_is(
    runner: SandboxRunner, host_tree: Path
) -> None:
    (host_tree / "work" / "link").symlink_to("/usr/bin")
    result = await runner.sh(
        f"readlink {host_tree}/work/link",
        read_write=(str(host_tree / "work"),),
        read_only=(str(host_tree / "work" / "link"),),
    )
    assert result.code == 0, result
    assert result.out == "/usr/bin\n"
    assert (host_tree / "work" / "link").readlink() == Path("/usr/bin")
