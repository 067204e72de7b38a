"""The local driver's per-supervisor log is rotated with a size cap (#12: an accept-error
flood once wrote 75 MB in 40 s into an unrotated host log)."""

from __future__ import annotations

import asyncio
import stat
import sys
from pathlib import Path

from grantbox.drivers.local import copy_capped


async def test_a_bounded_flood_stays_within_the_cap(tmp_path: Path) -> None:
    flood = (
        "import sys\n"
        "line = 'accept failed: Too many open files ' * 4\n"
        "for i in range(60000): sys.stdout.write(f'{i} {line}\\n')\n"
        "sys.stdout.write('x' * 100000 + '\\n')\n"
        "print('last line', flush=True)\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", flood, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    path = tmp_path / "supervisor.log"
    await copy_capped(process.stdout, path, max_bytes=256 * 1024, backups=1)
    assert await process.wait() == 0
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["supervisor.log", "supervisor.log.1"]
    total = sum(f.stat().st_size for f in files)
    assert total <= 2 * (256 * 1024 + 16 * 1024 + 1)  # the flood was ~9 MB
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert path.read_text().splitlines()[-1] == "last line"
