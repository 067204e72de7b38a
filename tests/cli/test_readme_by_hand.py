"""The README's "Doing it by hand" block, run verbatim in bash from the repository root.

Only the environment is the test's: private state, config and runtime directories, and a
free port for the gateway (``GRANTBOX_LISTEN``), so the block's own text is what runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.up_process import up_environment

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


def by_hand_block(readme: str) -> str:
    section = readme.split("## Doing it by hand", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the section has no sh block"
    return match.group(1)


def test_the_block_starts_in_the_background_and_waits() -> None:
    block = by_hand_block((REPO / "README.md").read_text())
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    assert lines[0] == "grantbox up &" and lines[1] == "grantbox wait"
    assert "grantbox sandbox events agent" in lines


@pytest.mark.timeout(600)
def test_the_readme_by_hand_section_runs_verbatim(tmp_path: Path) -> None:
    block = by_hand_block((REPO / "README.md").read_text())
    runtime = Path("/run") / f"gbx-readme-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **up_environment(tmp_path, runtime),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    script = tmp_path / "by-hand.sh"
    # The block verbatim; then wait for the `up` it stopped, so nothing outlives the test.
    script.write_text("set -euo pipefail\n" + block + "wait\n")
    try:
        done = subprocess.run(
            ["bash", str(script)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=500,
            check=False,
        )
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert '"error":"token_grant_failed","reason":"token_endpoint_unreachable"' in output
    assert re.search(
        r"no-token\s+GET http://alpha.localhost:18081/hello\s+(rule=\S+\s+)?"
        r"binding=demo:access_token\S*\s+reason=token_endpoint_unreachable",
        output,
    ), output
    assert "sandbox agent deleted" in output
    assert "stopped; nothing left running" in output
    assert not (tmp_path / "config" / "gateway.json").exists()
