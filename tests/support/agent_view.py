"""What an agent can read from inside its sandbox, searched for secrets by the agent itself.

:func:`search_script` is a shell snippet an agent runs (``sandbox exec ... sh -c``): it
prints its environment and every file of its view that holds one of the needles - the
writable places, ``/etc``, and the environment and command line of every process it can
see in ``/proc``. A needle must never stand whole in an argument vector the search could
read (the ``sh -c`` script is in ``/proc/<pid>/cmdline``): each is written in two halves
that only a pattern file, excluded from the search, joins. :func:`parse` reads the output.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

NEEDLES = "/tmp/.needles"
CANARY = "/tmp/.canary"
WHERE = "/etc /tmp /var /dev/shm /proc/[0-9]*/environ /proc/[0-9]*/cmdline"
SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+/=: ")


def _halves(needle: str) -> str:
    if len(needle) < 8 or not set(needle) <= SAFE:
        raise ValueError("a needle must be 8+ characters of base64, JWT or PEM text")
    half = len(needle) // 2
    return f"'{needle[:half]}' '{needle[half:]}'"


def search_script(needles: Iterable[str]) -> str:
    """The snippet; sections ``== env`` and ``== found`` (see :func:`parse`).

    A canary proves the search can find what it looks for: a random needle put in a file
    and in the environment of a process the agent starts, which the search must report.
    """
    canary = _halves(secrets.token_hex(16))
    lines = [f": > {NEEDLES}", f"printf '%s%s\\n' {canary} >> {NEEDLES}"]
    lines += [f"printf '%s%s\\n' {_halves(n)} >> {NEEDLES}" for n in needles]
    lines += [
        f"printf '%s%s' {canary} > {CANARY}",
        f"CANARY=$(cat {CANARY}) sleep 120 & canary=$!",
        # Wait (bounded) until the canary process is sleep, not yet the forked shell.
        'for _ in $(seq 200); do [ "$(cat /proc/$canary/comm)" = sleep ] && break; done',
        'echo "== env"; env',
        'echo "== found"',
        f"grep -rlsF -D skip -f {NEEDLES} --exclude=.needles {WHERE} 2>/dev/null",
        'echo "searched $(ls -d /proc/[0-9]* | wc -l) processes"',
        'echo "canary $canary"; kill $canary',
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class View:
    environment: dict[str, str]
    holders: list[str]
    """Files of the agent's view that hold a needle (the canary's not counted)."""
    processes: int
    """How many processes the search could see (it must have seen some)."""


def sections(text: str) -> dict[str, str]:
    """``== name`` headed sections of an agent's output."""
    out: dict[str, str] = {}
    for chunk in text.split("== ")[1:]:
        name, _, body = chunk.partition("\n")
        out[name.strip()] = body
    return out


def parse(text: str) -> View:
    """The search's findings; fails unless it found its canary in both places."""
    found = sections(text)
    environment = dict(line.split("=", 1) for line in found["env"].splitlines() if "=" in line)
    lines = found["found"].strip().splitlines()
    assert len(lines) >= 2 and lines[-2].startswith("searched "), found["found"]
    assert lines[-1].startswith("canary "), found["found"]
    canaries = {CANARY, f"/proc/{lines[-1].split()[1]}/environ"}
    holders = lines[:-2]
    assert canaries <= set(holders), f"the search missed its canary: {found['found']}"
    rest = [h for h in holders if h not in canaries]
    return View(environment, rest, int(lines[-2].split()[1]))
