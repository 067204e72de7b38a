"""The agent's root: a fresh tmpfs holding only what a program needs and the policy adds.

Built by the sandbox init inside its own mount namespace, before the agent exists:

* a tmpfs becomes the new root; the system directories (:data:`SYSTEM_READ_ONLY`) and the
  policy's ``read_only`` paths are bind-mounted onto it read-only, ``read_write`` paths
  writable, all ``nosuid,nodev``; a listed path that is a symbolic link (``/bin`` on a
  merged-/usr system) appears as the same link;
* ``/etc/passwd``, ``/etc/group`` and ``/etc/hosts`` are written fresh (the host's user list
  stays on the host), ``/tmp`` and ``/dev/shm`` are private tmpfs, ``/dev`` holds only the
  harmless devices and a private ``devpts``, ``/proc`` is the sandbox's own;
* the new root is remounted read-only, ``pivot_root`` swaps it in and the host's root is
  detached, so nothing else of the host (``/home``, ``/root``, ``/srv``, ``/opt``, ``/run``,
  ``/run/lock``, ``/var/tmp``, the host's ``/tmp``, other checkouts, grantbox's state and
  every instance's sockets) is reachable by any path.

Binds are not recursive: mounts below a listed directory are not shown. Mount points are
only ever created on the new root's own tmpfs, never inside a bound host directory.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import syscalls as sc

# What a program needs to start and speak TLS: binaries, libraries, the loader's cache,
# name-service and time-zone configuration, CA certificates. Missing ones are skipped.
SYSTEM_READ_ONLY = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/crypto-policies",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/protocols",
    "/etc/services",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/mime.types",
)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEVICE_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)
NEW_ROOT = "/tmp"  # noqa: S108 - mounted over in the sandbox's private mount namespace
PRIVATE_TMP = "/tmp"  # noqa: S108 - the sandbox's own tmpfs inside the new root
ROOT_SIZE = "4m"
DEV_SIZE = "64k"
SHM_SIZE = "64m"

_ST_TO_MS = (
    (os.ST_RDONLY, sc.MS_RDONLY),
    (os.ST_NOSUID, sc.MS_NOSUID),
    (os.ST_NODEV, sc.MS_NODEV),
    (os.ST_NOEXEC, sc.MS_NOEXEC),
    (os.ST_NOATIME, sc.MS_NOATIME),
    (os.ST_NODIRATIME, sc.MS_NODIRATIME),
    (os.ST_RELATIME, sc.MS_RELATIME),
)


class ViewRefused(RuntimeError):
    """The agent's root cannot be built as the policy says; nothing of the agent runs."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One host path in the view: ``writable`` binds are not remounted read-only."""

    path: str
    writable: bool = False
    required: bool = False


def plan(read_only: Sequence[str], read_write: Sequence[str]) -> tuple[Entry, ...]:
    """System paths, then the policy's, parents before children (pure).

    A policy path repeated in the system list replaces it (``read_write`` wins over the
    system's read-only entry only where validation allowed it).
    """
    entries: dict[str, Entry] = {path: Entry(path) for path in SYSTEM_READ_ONLY}
    for path in read_only:
        entries[path] = Entry(path, required=True)
    for path in read_write:
        entries[path] = Entry(path, writable=True, required=True)
    return tuple(sorted(entries.values(), key=lambda e: (e.path.count("/"), e.path)))


def mount_flags(st_flags: int) -> int:
    """The ``MS_*`` flags a bind must keep when remounted (pure; from ``statvfs``).

    In a user namespace the kernel refuses a remount that drops a flag it locked, so read
    them from the mount as it is and only ever add.
    """
    return sum(ms for st, ms in _ST_TO_MS if st_flags & st)


def passwd_text(uid: int, gid: int) -> tuple[str, str]:
    """``/etc/passwd`` and ``/etc/group`` naming only root, nobody and the agent (pure)."""
    users = {0: "root:x:0:0:root:/root:/usr/sbin/nologin", 65534: "nobody:x:65534:65534::/:"}
    groups = {0: "root:x:0:", 65534: "nogroup:x:65534:"}
    users.setdefault(uid, f"sandbox:x:{uid}:{gid}:sandbox:/tmp:/bin/sh")
    groups.setdefault(gid, f"sandbox:x:{gid}:")
    return (
        "".join(line + "\n" for line in users.values()),
        "".join(line + "\n" for line in groups.values()),
    )


HOSTS_TEXT = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def _mountpoint(root: str, path: str, *, directory: bool) -> str:
    """Create ``root + path`` on the new root's tmpfs; refuse links and foreign mounts."""
    root_dev = os.lstat(root).st_dev
    current = root
    parts = [p for p in path.split("/") if p]
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        target = f"{current}/{part}"
        try:
            info = os.lstat(target)
        except FileNotFoundError:
            if os.lstat(current).st_dev != root_dev:
                raise ViewRefused(
                    f"cannot show {path}: it does not exist inside {current[len(root) :]}, "
                    "which comes from the host"
                ) from None
            if last and not directory:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW))
            else:
                os.mkdir(target, 0o755)
            current = target
            continue
        if stat.S_ISLNK(info.st_mode):
            shown = target[len(root) :]
            raise ViewRefused(f"cannot show {path}: {shown} is a symbolic link; list its target")
        if not last and not stat.S_ISDIR(info.st_mode):
            raise ViewRefused(f"cannot show {path}: {target[len(root) :]} is not a directory")
        current = target
    return current


def _bind(source: str, target: str, *, writable: bool, extra: int = 0) -> None:
    try:
        sc.mount(source, target, None, sc.MS_BIND, None)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise ViewRefused(
                f"cannot show {source}: it has mounts below it that this sandbox cannot hide; "
                "list the directories beneath it instead"
            ) from None
        raise
    flags = mount_flags(os.statvfs(target).f_flag) | sc.MS_NOSUID | sc.MS_NODEV | extra
    if not writable:
        flags |= sc.MS_RDONLY
    sc.mount("none", target, None, sc.MS_REMOUNT | sc.MS_BIND | flags, None)


def _show(root: str, entry: Entry, warn: list[str]) -> None:
    if not os.path.lexists(entry.path):
        if entry.required:
            warn.append(f"{entry.path} does not exist on this host; not shown")
        return
    if os.path.islink(entry.path):
        parent = os.path.dirname(entry.path)
        directory = _mountpoint(root, parent, directory=True) if parent != "/" else root
        if os.lstat(directory).st_dev != os.lstat(root).st_dev:
            return  # inside a shown host directory: the link is there already
        os.symlink(os.readlink(entry.path), f"{directory}/{os.path.basename(entry.path)}")
        return
    is_dir = os.path.isdir(entry.path)
    target = _mountpoint(root, entry.path, directory=is_dir)
    _bind(entry.path, target, writable=entry.writable)


def _write(path: str, text: str, mode: int = 0o444) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _build_dev(root: str) -> None:
    dev = _mountpoint(root, "/dev", directory=True)
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, f"size={DEV_SIZE},mode=0755")
    for name in DEVICES:
        if not os.path.exists(f"/dev/{name}"):
            continue
        os.close(os.open(f"{dev}/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        sc.mount(f"/dev/{name}", f"{dev}/{name}", None, sc.MS_BIND, None)
        flags = mount_flags(os.statvfs(f"{dev}/{name}").f_flag) | sc.MS_NOSUID | sc.MS_NOEXEC
        sc.mount("none", f"{dev}/{name}", None, sc.MS_REMOUNT | sc.MS_BIND | flags, None)
    os.mkdir(f"{dev}/pts", 0o755)
    sc.mount(
        "devpts",
        f"{dev}/pts",
        "devpts",
        sc.MS_NOSUID | sc.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )
    os.mkdir(f"{dev}/shm", 0o1777)
    sc.mount(
        "tmpfs", f"{dev}/shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, f"size={SHM_SIZE},mode=1777"
    )
    for name, link in DEVICE_LINKS:
        os.symlink(link, f"{dev}/{name}")


def _cover(root: str, hidden: Iterable[str]) -> None:
    """Hidden directories that a policy path brought into view get an empty tmpfs."""
    for path in hidden:
        inside = f"{root}{path}"
        if os.path.isdir(inside) and not os.path.islink(inside):
            flags = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
            sc.mount("tmpfs", inside, "tmpfs", flags, "size=4k,mode=0555")


def build_root(
    *,
    read_only: Sequence[str],
    read_write: Sequence[str],
    hidden: Sequence[str],
    tmp_size: str,
    uid: int,
    gid: int,
    files: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """Build the view and pivot into it; return warnings for the agent's log.

    ``files`` are ``(path inside /tmp, text)`` written into the private ``/tmp`` (the CA
    bundle). Must run as the mount namespace's root, before any thread is started.
    """
    warn: list[str] = []
    root = NEW_ROOT
    sc.mount("none", "/", None, sc.MS_REC | sc.MS_PRIVATE, None)
    sc.mount("tmpfs", root, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, f"size={ROOT_SIZE},mode=0755")
    for entry in plan(read_only, read_write):
        _show(root, entry, warn)
    _cover(root, hidden)
    etc = _mountpoint(root, "/etc", directory=True)
    if os.lstat(etc).st_dev == os.lstat(root).st_dev:  # not when the policy shows /etc
        passwd, group = passwd_text(uid, gid)
        for name, text in (("passwd", passwd), ("group", group), ("hosts", HOSTS_TEXT)):
            if not os.path.lexists(f"{etc}/{name}"):
                _write(f"{etc}/{name}", text)
    proc = _mountpoint(root, "/proc", directory=True)
    sc.mount("proc", proc, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, None)
    _build_dev(root)
    sys_dir = _mountpoint(root, "/sys", directory=True)
    # A sysfs of our own shows only the sandbox's interfaces; where the kernel refuses it
    # (some rootless setups) the directory stays empty: the host's is never bound.
    try:
        ro = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
        sc.mount("sysfs", sys_dir, "sysfs", ro, None)
    except OSError:
        warn.append("/sys is empty: this kernel refused a sysfs for the sandbox")
    tmp = _mountpoint(root, PRIVATE_TMP, directory=True)
    sc.mount("tmpfs", tmp, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, f"size={tmp_size},mode=1777")
    for name, text in files:
        _write(f"{tmp}/{name}", text)
    var_tmp = _mountpoint(root, "/var", directory=True) + PRIVATE_TMP
    if not os.path.lexists(var_tmp):
        os.symlink(PRIVATE_TMP, var_tmp)
    sc.mount("none", root, None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV, None)
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount(".", sc.MNT_DETACH)
    os.chdir("/")
    return warn
