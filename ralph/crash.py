"""Named crash points: `RALPH_CRASHPOINT=<name>` makes the process die at that step, as a power cut would.

Tests use them to prove that a tick killed between any two steps leaves a state the next tick repairs.
"""

from __future__ import annotations

import logging
import os
import time

CRASHPOINTS = (
    "after-load",
    "mid-prune",
    "mid-commit",  # ralph's own git directory made, the agent's leftovers staged, nothing committed
    "mid-import",  # a workspace's commit fetched into refs/ralph/incoming/, the ref not yet dropped
    "mid-replay",  # the scratch clone of a replay made (git older than 2.38)
    "mid-bookkeeping",  # a bookkeeping commit's temporary index written (task add; landing.squash = false)
    "after-spawn-before-save",
    "after-reap-before-save",
    "before-push",  # the chain built and saved as `train.pushing`, the push not yet made
    "after-push-before-save",
    "after-save",
)


def crashpoint(name: str) -> None:
    assert name in CRASHPOINTS, name
    if os.environ.get("RALPH_CRASHPOINT") == name:
        logging.shutdown()
        os._exit(137)
    # RALPH_STALL=<name>:<seconds> holds the process there instead (with whatever lock it has), so a
    # test can make something happen while a tick is at that step.
    stall, _, seconds = os.environ.get("RALPH_STALL", "").partition(":")
    if stall == name:
        time.sleep(float(seconds or 1))
