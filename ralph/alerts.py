"""Telling people about the ticks themselves: hooks.on_event hears `ticks_failing` once when ticks
start failing (or hang, or cannot reach the remote) and `ticks_recovered` once when they run again.

The decision is ralph.health's; this module reads what it needs from the config and starts the hook
as any other event's, with the last command that was valid when the config itself is what broke.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ralph import health
from ralph.checkout import Checkout, open_checkout
from ralph.errors import RalphError
from ralph.events import Notice, start_event_hook
from ralph.paths import Paths

logger = logging.getLogger(__name__)


def facts(root: Path) -> health.Remembered | None:
    """What the config says now, for the ring file to remember; None when it cannot be read."""
    try:
        checkout = open_checkout(root)
    except RalphError:
        return None
    return facts_from(checkout)


def facts_from(checkout: Checkout) -> health.Remembered | None:
    """What the config of a checkout already open says, for the ring file to remember."""
    try:
        base = checkout.base_branch()
    except RalphError:
        return None
    config = checkout.config
    return health.Remembered(
        on_event=tuple(config.hooks.on_event),
        hook_timeout_s=float(config.hooks.timeout_seconds),
        base_branch=base,
        tick_budget_s=float(config.parallel.tick_budget_s),
    )


def announce(root: Path, change: health.Change) -> None:
    """Log the change, and start hooks.on_event for it (RALPH_EVENT ticks_failing or ticks_recovered)."""
    if change.event == "ticks_failing":
        logger.error("ticks are failing: %s", change.reason)
    else:
        logger.warning("ticks recovered: %s", change.reason)
    argv = list(change.remembered.on_event)
    if not argv:
        return
    notice = Notice(
        event=change.event, task_id=health.HOOK_RUN_DIR, workspace=str(root), sha="", reason=change.reason
    )
    start_event_hook(
        argv,
        notice,
        paths=Paths.for_root(root),
        base_branch=change.remembered.base_branch,
        timeout_s=change.remembered.hook_timeout_s,
        now=change.at,
        n=0,
    )
