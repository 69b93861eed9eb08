"""The merge train: verified work stacked, gated position by position, landed as a prefix in one push.

When an agent's work is committed the task joins the end of the train (in the order work becomes
ready, not queue order): its change, squashed, is replayed onto the position ahead of it (ralph.replay)
and the CI gate judges that position, which holds everything ahead of it too. A task's first gate run
is its train position. The longest prefix whose every position passed lands in one push (the tick
does it, with ralph.landing); the rest stays, stacked on what landed.

A gate failure at position k is blamed on k only once every position ahead of it passed; k leaves the
train for a remediation agent, and the positions behind it are stacked again without it. A base that
someone else moved stacks the whole train again: verdicts whose code did not change carry over (two
trees that differ only in ralph's queue and done files are the same for the gate), and with
`ci.verify_rebased` false or "overlap" the outside change is trusted. A conflict with the base goes to
a remediation agent; a conflict only with positions ahead waits until they land or leave.

The train never imports the tick: what it needs from it (start or stop a gate, a remediation, a
report line) comes through `Effects`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from ralph.errors import GitError
from ralph.git import Git, NewCommit, cat_blobs, object_names, write_commits
from ralph.replay import Replayed, Replayer
from ralph.state import Lifecycle, Position, State, Train, Worker

logger = logging.getLogger(__name__)


class Effects(Protocol):
    """What the train asks of the tick that drives it."""

    def gate_slots(self) -> int:
        """Gate jobs that may still start now (ci.max_parallel)."""

    def can_remediate(self, worker: Worker) -> bool:
        """Whether `worker` can be handed on now: to a remediation agent (a slot is free), or to its
        end when its remediations are used up."""

    def start_gate(self, worker: Worker, commit: str, detail: str) -> None: ...

    def stop_gate(self, worker: Worker, why: str) -> None:
        """Its gate judges a commit the train no longer holds: stop it; the worker is integrating again."""

    def blamed(self, worker: Worker, position: Position) -> None:
        """Its position failed the gate with every position ahead passed: remediate or give up."""

    def conflicted(self, worker: Worker, replayed: Replayed, onto: str) -> None:
        """Its change conflicts with the base: remediate or give up."""

    def act(self, task_id: str, action: str, detail: str) -> None: ...

    def message(self, worker: Worker) -> str:
        """The commit message of the worker's task."""


@dataclass(frozen=True)
class Rules:
    gate: bool  # a CI gate is configured
    max_parallel: int  # gates at once, and how far ahead of the first undecided position they run
    verify_rebased: bool | Literal["overlap"]
    max_rebuilds: int
    ignore: tuple[str, ...]  # ralph's own queue and done files: not code, for the gate


class Conductor:
    """Keeps `state.train` in order for one tick."""

    def __init__(
        self, state: State, git: Git, effects: Effects, rules: Rules, *, scratch: Path, now: datetime
    ) -> None:
        self.state = state
        self.now = now
        self.git = git
        self.effects = effects
        self.rules = rules
        self.scratch = scratch
        self.replayer = Replayer(git, scratch)

    @property
    def train(self) -> Train:
        assert self.state.train is not None
        return self.state.train

    def worker(self, position: Position) -> Worker:
        worker = self.state.worker(position.task_id)
        assert worker is not None, position.task_id
        return worker

    @property
    def base_red(self) -> bool:
        """The base's tip fails the gate (ralph.watch): a failure is not blamed on the task it met."""
        return self.state.watch.verdict == "red"

    # --- the base ----------------------------------------------------------------------------------

    def follow(self, base_sha: str) -> bool:
        """The remote base is `base_sha`: restack the train on it if it is on another. Returns whether
        an outside push made gates run again (a rebuild that counts toward starvation)."""
        if self.state.train is None:
            self.state.train = Train(base_sha=base_sha)
            return False
        old = self.train.base_sha
        if old == base_sha:
            return False
        self.train.base_sha = base_sha
        if not self.train.positions:
            return False
        trust = self._trust_outside(old, base_sha)
        regated = self.restack(0, trust=trust)
        if regated:
            self.train.rebuilds += 1
        return regated

    def _trust_outside(self, old: str, new: str) -> bool:
        """Whether verdicts survive the base moving from `old` to `new` under the train."""
        outside = self._changed_paths(old, new)
        if not outside:
            return True  # only ralph's queue files moved (a `task add`, a landing's bookkeeping)
        if self.rules.verify_rebased is True:
            return False
        if self.rules.verify_rebased is False:
            return True
        ours: set[str] = set()
        for position in self.train.positions:
            ours |= self._changed_paths(position.onto, position.commit)
        return not (outside & ours)

    def _changed_paths(self, before: str, after: str) -> set[str]:
        excludes = [f":(exclude){p}" for p in self.rules.ignore]
        # --ignore-submodules=none: `ignore = all` (.gitmodules, config) would hide a submodule's bump.
        args = ("diff", "--name-only", "-z", "--no-renames", "--no-ext-diff", "--ignore-submodules=none")
        out = self.git.run(*args, before, after, "--", ".", *excludes).stdout
        return {p for p in out.split("\0") if p}

    def code_same(self, a: str, b: str) -> bool:
        """Whether two commits' trees differ nowhere but in ralph's queue and done files."""
        if a == b:
            return True
        excludes = [f":(exclude){p}" for p in self.rules.ignore]
        args = ("diff", "--quiet", "--no-ext-diff", "--no-textconv", "--ignore-submodules=none")
        diff = self.git.run(*args, a, b, "--", ".", *excludes, ok=(0, 1))
        return diff.returncode == 0

    # --- stacking ----------------------------------------------------------------------------------

    def restack(self, start: int, *, trust: bool = False) -> bool:
        """Stack positions from `start` on again (on the position ahead, or the base). A verdict stays
        when the code it judged did not change (or `trust`: an outside change to the base we were told
        to trust). Returns whether any passed verdict was dropped."""
        dropped = False
        self._foresee_restack(start)
        n = start
        while n < len(self.train.positions):
            position = self.train.positions[n]
            onto = self.train.positions[n - 1].commit if n else self.train.base_sha
            if position.onto == onto:
                n += 1
                continue
            worker = self.worker(position)
            replayed = self._replay(worker, onto)
            if not replayed.clean:
                # It no longer fits on what is ahead of it: out of the train, it joins again later.
                self._leave(
                    worker, n, f"no longer applies on the position ahead ({', '.join(replayed.conflicts)})"
                )
                continue
            was_passed = position.passed is not None and self.code_same(position.passed, position.commit)
            gating = worker.job.commit if worker.job and worker.lifecycle is Lifecycle.CHECKING else None
            if gating is not None and not self.code_same(gating, replayed.commit):
                self.effects.stop_gate(worker, "the train was stacked again under it")
                dropped = True  # a gate stopped by the move runs again: that too is a rebuild
            if was_passed and not self.code_same(position.commit, replayed.commit) and not trust:
                dropped = True
            keep = was_passed and (trust or self.code_same(position.commit, replayed.commit))
            # Without a gate a position passes when it stacks cleanly, wherever it is stacked.
            position.passed = replayed.commit if keep or not self.rules.gate else None
            position.failed = None
            position.commit = replayed.commit
            position.onto = onto
            n += 1
        return dropped

    def _foresee_restack(self, start: int) -> None:
        """Ready the replays restack(start) will make: from the first position that no longer stands on
        the one ahead, every position behind it is stacked again, in order."""
        positions = self.train.positions
        for n in range(start, len(positions)):
            onto = positions[n - 1].commit if n else self.train.base_sha
            if positions[n].onto != onto:
                self._foresee(onto, [self.worker(p) for p in positions[n:]])
                return

    def prepare(self, workers: Sequence[Worker]) -> None:
        """Ready the replays of `workers`, about to join the train's end in this order, in a few git
        calls for all of them. (On a red base the task that fixes it joins at the front: no foreseeing.)"""
        onto = self.train.positions[-1].commit if self.train.positions else self.train.base_sha
        self._foresee(onto, workers, stack=not self.base_red)

    def _foresee(self, onto: str, workers: Sequence[Worker], *, stack: bool = True) -> None:
        """`workers` stacked one after another on `onto`: those whose replays can be foreseen are
        written at once, the rest squashed ready. A commit gone (or a tree fast-import will not write)
        fails no one here: that worker's own replay meets it, with its reason."""
        changes = [
            (w.base_sha, w.head_sha, self.effects.message(w)) for w in workers if w.base_sha and w.head_sha
        ]
        foreseen = 0
        if stack:
            with contextlib.suppress(GitError):
                foreseen = self.replayer.stack(onto, changes, self.now)
        with contextlib.suppress(GitError):
            self.replayer.prepare([(old, head) for old, head, _ in changes[foreseen:]], self.train.base_sha)

    def _replay(self, worker: Worker, onto: str) -> Replayed:
        assert worker.base_sha is not None and worker.head_sha is not None
        return self.replayer.replay(
            old_base=worker.base_sha,
            head=worker.head_sha,
            onto=onto,
            message=self.effects.message(worker),
            base=self.train.base_sha,  # every position stands on it
        )

    def _leave(self, worker: Worker, index: int, why: str) -> None:
        del self.train.positions[index]
        if worker.lifecycle is Lifecycle.CHECKING:
            self.effects.stop_gate(worker, why)
        self.effects.act(worker.task_id, "left_train", f"left the merge train: {why}")

    def join(self, worker: Worker) -> bool:
        """Stack `worker`'s committed change at the end of the train; False when it cannot join now.
        The task that fixes a red base goes to the front: nothing behind a red base can pass before it."""
        first = self.base_red and worker.task_id == self.state.watch.fix_task
        onto = self.train.positions[-1].commit if self.train.positions and not first else self.train.base_sha
        replayed = self._replay(worker, onto)
        if not replayed.clean:
            if self.train.positions:
                alone = self._replay(worker, self.train.base_sha)
                if alone.clean:
                    # It conflicts with work ahead of it that has not landed: wait for it to land or leave.
                    logger.info(
                        "%s: waits to join the train: it conflicts with work ahead (%s)",
                        worker.task_id,
                        ", ".join(replayed.conflicts),
                    )
                    return False
                replayed = alone
            if self.effects.can_remediate(worker):
                self.effects.conflicted(worker, replayed, self.train.base_sha)
            return False
        position = Position(task_id=worker.task_id, commit=replayed.commit, onto=onto)
        if not self.rules.gate:
            position.passed = replayed.commit
        if first:
            self.train.positions.insert(0, position)
            self.restack(1)
        else:
            self.train.positions.append(position)
        n = self.train.positions.index(position) + 1
        self.effects.act(
            worker.task_id, "joined_train", f"joined the merge train at position {n} ({replayed.commit[:10]})"
        )
        return True

    # --- verdicts ---------------------------------------------------------------------------------------

    def verdict(
        self,
        worker: Worker,
        commit: str,
        passed: bool,
        *,
        exit_code: int | None = None,
        timed_out: bool = False,
    ) -> bool:
        """Record what the gate said of `commit`, the worker's position; False when the position holds
        other code by now (the verdict is of no use)."""
        position = self.train.position(worker.task_id)
        if position is None or not self.code_same(position.commit, commit):
            return False
        if passed:
            position.passed = commit
            position.failed = None
        else:
            position.failed = position.commit
            position.failed_exit = exit_code
            position.failed_timed_out = timed_out
        return True

    def valid(self, position: Position) -> bool:
        if not self.rules.gate:
            return True  # no gate to wait for (also a train saved while ci.command was set, then emptied)
        return position.passed is not None and (
            position.passed == position.commit or self.code_same(position.passed, position.commit)
        )

    def blame(self) -> None:
        """A failed position with every position ahead passed is at fault: it leaves for remediation
        and the positions behind it are stacked again without it."""
        if self.base_red:
            return  # the failures met a red base: they wait for it to pass again (ask_again)
        n = 0
        while n < len(self.train.positions):
            position = self.train.positions[n]
            if self.valid(position):
                n += 1
                continue
            if position.failed != position.commit:
                return  # undecided: nothing behind it can be blamed yet
            worker = self.worker(position)
            if not self.effects.can_remediate(worker):
                return  # waits for a free agent slot, holding everything behind it
            del self.train.positions[n]
            self.effects.blamed(worker, position)
            self.restack(n)

    def start_gates(self) -> None:
        """Gate undecided positions front first, no further than ci.max_parallel positions past the first
        undecided one: a failure there costs at most that many gates run again behind it."""
        first = next((n for n, p in enumerate(self.train.positions) if not self.valid(p)), None)
        if first is None:
            return
        for position in self.train.positions[first : first + self.rules.max_parallel]:
            worker = self.worker(position)
            if self.valid(position) or position.failed == position.commit:
                continue
            if worker.lifecycle is Lifecycle.CHECKING:
                continue
            if self.effects.gate_slots() <= 0:
                return
            n = self.train.index(position.task_id)
            assert n is not None
            self.effects.start_gate(
                worker, position.commit, f"position {n + 1} of the merge train ({position.commit[:10]})"
            )

    def landable(self) -> list[Position]:
        """The longest prefix whose every position passed the gate. While the base is red, the longest
        prefix whose last position passed and none ahead is undecided: positions ahead failed on the red
        base, and that tip fixed it."""
        positions = self.train.positions
        end = 0
        for n, position in enumerate(positions):
            if self.valid(position):
                end = n + 1
            elif not (self.base_red and position.failed == position.commit):
                break  # undecided, or (the base green) failed: nothing behind it lands
        return positions[:end]

    def ask_again(self) -> None:
        """The base passes again: gate failures met on the red base are no verdict on their tasks."""
        for position in self.train.positions:
            position.failed = None
            position.failed_exit = None
            position.failed_timed_out = False

    def landed(self, tip: str, tasks: Iterable[str]) -> None:
        """`tasks` (a prefix) landed as `tip`: the rest stands on it now, verdicts kept (the landed
        chain's code is the last landed position's code)."""
        gone = set(tasks)
        self.train.positions = [p for p in self.train.positions if p.task_id not in gone]
        self.train.base_sha = tip
        self.train.rebuilds = 0
        self.train.starved_at = None
        self.train.push_attempts = 0
        self.train.next_attempt_at = None
        self.train.last_error = None
        self.train.pushing = {}
        self._stand_on(tip)
        self.restack(0)

    def _stand_on(self, tip: str) -> None:
        """Move the positions behind a landing onto its `tip` without replaying them: the tip is the
        last landed position plus ralph's bookkeeping, and no position changes ralph's queue and done
        files (the policy refuses that), so each position's tree is its own with the tip's queue and
        done files. One fast-import for the whole train, where replaying costs six git commands a
        position. Anything else (a position of its own queue files, a tip with other code) is left to
        restack."""
        positions = self.train.positions
        if not positions or positions[0].onto == tip:
            return
        landed = positions[0].onto  # the last landed position (the landed workers left the train)
        if not self.code_same(landed, tip):
            return
        chain = [landed, *(p.commit for p in positions)]
        specs = [f"{c}:{path}" for c in chain for path in self.rules.ignore] + [
            f"{p.commit}^{{tree}}" for p in positions
        ]
        names = object_names(self.git, specs)
        if any(
            names.get(f"{c}:{path}") != names.get(f"{landed}:{path}")
            for c in chain
            for path in self.rules.ignore
        ):
            return
        files = cat_blobs(self.git, [f"{tip}:{path}" for path in self.rules.ignore])
        if len(files) != len(self.rules.ignore):
            return
        ours = {spec.split(":", 1)[1]: data for spec, data in files.items()}
        commits = [
            NewCommit(
                ours,
                self.effects.message(self.worker(p)),
                self.now,
                parent=n - 1 if n else tip,
                tree=names[f"{p.commit}^{{tree}}"],
            )
            for n, p in enumerate(positions)
        ]
        for n, (position, sha) in enumerate(zip(positions, write_commits(self.git, commits), strict=True)):
            keep = self.valid(position)
            if position.failed == position.commit:
                position.failed = sha
            position.commit = sha
            position.onto = positions[n - 1].commit if n else tip
            position.passed = sha if keep else None
