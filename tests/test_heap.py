"""The collector settings long-running processes apply before serving."""

from __future__ import annotations

import json
import subprocess
import sys

from grantbox.heap import YOUNG_COLLECTION_EVERY

_PROBE = """
import gc, json
from grantbox.heap import settle
before = gc.get_threshold()
settle()
garbage = []
garbage.append(garbage)  # a cycle made after settling is still collected
del garbage
print(json.dumps({"before": before, "after": gc.get_threshold(),
                  "frozen": gc.get_freeze_count(), "collected": gc.collect()}))
"""


def test_settling_freezes_startup_and_spaces_young_collections_but_still_collects() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(result.stdout)
    assert seen["after"][0] == YOUNG_COLLECTION_EVERY > seen["before"][0]
    assert seen["after"][1:] == seen["before"][1:]
    assert seen["frozen"] > 1000  # what the import built is out of the collector's walks
    assert seen["collected"] >= 1
