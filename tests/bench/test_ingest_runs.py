"""bench/ingest.py still runs against the gateway as it is (it imports the storage code's
internals, so a refactor could break it unnoticed). Nothing here measures time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_ingest_benchmark_runs_and_prints_both_figures() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ingest.py"), "--batches", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("events of ") and lines[0].endswith(", sqlite")
    assert any(line.strip().startswith("gateway (HTTP to stored)") for line in lines)
    assert any("read" in line and "commit" in line for line in lines)
