"""Rewinds: someone force-pushed the base back past commits ralph landed.

The train remembers the base it last stood on (state.json `train.base_sha`, saved with every tick that
saw the base move), so a rewind is noticed by the first tick after it even if the tick that fetched
it died. Every `completed` record whose landing is no longer on the base is reported (an event in
events.jsonl, a line from the tick, hooks.on_event hears `rewound`). If the rewind also put the task
back in the queue as open work, it runs again from scratch, and that run is not counted against the
task's attempts; if the base still shows it done (a person took the code out on purpose), it is only
reported.
"""

from __future__ import annotations

import logging

from ralph.clock import format_z
from ralph.crew import Crew
from ralph.queue import still_wanted
from ralph.state import Lifecycle

logger = logging.getLogger(__name__)


def check(crew: Crew) -> None:
    """Before the train follows the base: when the base no longer holds the one the train stood on,
    look for landings it lost."""
    train = crew.state.train
    if train is None or train.base_sha == crew.base_sha:
        return
    if crew.git.is_ancestor(train.base_sha, crew.base_sha):
        return  # the base moved forward: nothing was removed
    logger.warning(
        "%s/%s was rewound: %s is no longer on it; checking what ralph landed",
        crew.checkout.remote,
        crew.base,
        train.base_sha[:10],
    )
    for worker in crew.state.workers:
        if worker.lifecycle is not Lifecycle.COMPLETED or worker.landed_sha is None:
            continue
        lost = worker.landed_sha
        if crew.git.is_ancestor(lost, crew.base_sha):
            continue
        assert crew.queues is not None
        again = still_wanted(crew.queues.status(worker.task_id))  # the queue's copy first
        what = "it is open in the queue again: it runs again, not counted as an attempt"
        if not again:
            what = "the base still has it done, so it is only reported"
        detail = f"its landing {lost[:10]} is no longer on {crew.base} (a rewind); {what}"
        crew.ledger.report(worker, "rewound", detail, sha=lost)
        crew.act(worker.task_id, "rewound", detail)
        # The record keeps the landing in last_error; with landed_sha cleared a later rewind does not
        # report the same loss again.
        worker.landed_sha = None
        worker.last_error = f"landing {lost} removed from {crew.base} by a rewind at {format_z(crew.now)}"
        if again:
            worker.attempt = max(0, worker.attempt - 1)  # the start that follows gives it back
            worker.next_attempt_at = crew.now
            crew.ledger.transition(worker, Lifecycle.FAILED, detail, announce=False, sha=lost)
