"""Named crash points: `RALPH_CRASHPOINT=<name>` makes the process die at that step, as a power cut would.

Tests use them to prove that a tick killed between any two steps leaves a state the next tick repairs.
"""

from __future__ import annotations

import logging
import os

CRASHPOINTS = (
    "after-load",
    "mid-prune",
    "after-spawn-before-save",
    "after-reap-before-save",
    "after-push-before-save",
    "after-save",
)


def crashpoint(name: str) -> None:
    assert name in CRASHPOINTS, name
    if os.environ.get("RALPH_CRASHPOINT") == name:
        logging.shutdown()
        os._exit(137)
