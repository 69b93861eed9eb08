"""Benchmark 6: what claims and heartbeats add to a tick (ralph.claims), against git itself.

A bare origin and two control clones: "here" (the host measured) and "there" (another host whose
claims "here" reads). Every call is made in this process through ralph.claims, as a tick makes it;
the git commands each one runs are counted (a Git whose run() counts). Floors, paired run by run:

- `git ls-remote origin refs/ralph/*` (one round trip: the least a read of the claims can cost), for
  read_all() and for a heartbeat with nothing due;
- `git push origin <sha>:refs/bench/<n>` of one ref (the least a claim or a heartbeat can cost), for
  claim() and heartbeat() of 1, 4 and 16 claims;
- the landing push of a single-host tick (`push_with_lease` of the base), for the fenced landing
  (`push_atomic`: the base and 4 claims in one transaction).

    python bench/claims.py [--runs N]
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import BASE, Figure, Row, git, heading, print_table, runs_from_argv, sandbox, timed

from ralph.claims import Claims
from ralph.git import Git, RefUpdate, Result, push_atomic, push_with_lease

RUNS = 9
TTL = timedelta(minutes=15)
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


class CountingGit(Git):
    """ralph's Git, counting the git commands it runs."""

    def __init__(self, cwd: Path) -> None:
        super().__init__(cwd)
        self.commands = 0

    def run(self, *args: str, **kwargs: Any) -> Result:
        self.commands += 1
        return super().run(*args, **kwargs)


def setup(root: Path) -> tuple[Path, Path, Path]:
    origin = root / "origin.git"
    git(root, "init", "-q", "--bare", "-b", BASE, str(origin))
    seed = root / "seed"
    git(root, "clone", "-q", str(origin), str(seed))
    (seed / "README.md").write_text("a benchmark project\n")
    git(seed, "add", "README.md")
    git(seed, "commit", "-q", "-m", "initial commit")
    git(seed, "push", "-q", "origin", f"HEAD:{BASE}")
    here, there = root / "here", root / "there"
    for path in (here, there):
        git(root, "clone", "-q", str(origin), str(path))
    return origin, here, there


def measure(
    runs: int,
    ralph: Callable[[], None],
    floor: Callable[[], None],
    counter: CountingGit,
    prepare: Callable[[], None] = lambda: None,
) -> tuple[Figure, Figure, float]:
    """Interleaved runs of ralph's call and its floor; also the git commands per call (mean).
    `prepare` runs before each of ralph's calls, untimed and uncounted."""
    ours: list[float] = []
    theirs: list[float] = []
    commands = 0
    for _ in range(runs):
        theirs.append(timed(floor))
        prepare()
        before = counter.commands
        ours.append(timed(ralph))
        commands += counter.commands - before
    return Figure(ours), Figure(theirs), commands / runs


def run(runs: int = RUNS) -> list[Row]:
    heading("6. claims and heartbeats (per call, in-process, against git itself)")
    rows: list[Row] = []
    with sandbox("claims") as root:
        origin, here_path, there_path = setup(root)
        here_git, there_git = CountingGit(here_path), CountingGit(there_path)
        here = Claims(here_git, remote="origin", host="here", ttl=TTL)
        there = Claims(there_git, remote="origin", host="there", ttl=TTL)
        tasks = (f"RQ-{n:05d}" for n in itertools.count(1))
        refs = (f"refs/bench/{n}" for n in itertools.count(1))
        tip = git(here_path, "rev-parse", f"origin/{BASE}")

        def ls_remote() -> None:
            subprocess.run(
                ["git", "ls-remote", "origin", "refs/ralph/*"], cwd=here_path, check=True, capture_output=True
            )

        def push_one() -> None:
            subprocess.run(
                ["git", "push", "-q", "origin", f"{tip}:{next(refs)}"],
                cwd=here_path,
                check=True,
                capture_output=True,
            )

        def row(
            name: str, ralph: Callable[[], None], floor: Callable[[], None], label: str, counter: CountingGit
        ) -> None:
            ours, theirs, commands = measure(runs, ralph, floor, counter)
            rows.append(
                Row(
                    name,
                    ours,
                    theirs,
                    label,
                    notes=f"{commands:.1f} git commands per call",
                    extra={"git": commands},
                )
            )

        # Reading: what every tick that may start a task pays.
        row("read_all, no claims", lambda: here.read_all() and None, ls_remote, "`git ls-remote`", here_git)
        for _ in range(16):
            there.claim(next(tasks), 1, T0)
        row(
            "read_all, 16 claims of another host",
            lambda: here.read_all() and None,
            ls_remote,
            "`git ls-remote`",
            here_git,
        )
        # After the other host's heartbeat moved all 16: the new documents must be fetched. The floor
        # reads them in a clone of its own, so that each side fetches what the heartbeat wrote.
        clock = itertools.count(1)
        reader = root / "reader"
        git(root, "clone", "-q", str(origin), str(reader))
        names = [f"refs/ralph/claims/{task}" for task in there.held()]

        def other_host_beats() -> None:
            there.heartbeat(dict.fromkeys(there.held(), "running"), T0 + TTL * next(clock), force=True)

        def ls_remote_and_fetch() -> None:
            subprocess.run(
                ["git", "ls-remote", "origin", "refs/ralph/*"], cwd=reader, check=True, capture_output=True
            )
            subprocess.run(
                ["git", "fetch", "-q", "--no-write-fetch-head", "origin", *names],
                cwd=reader,
                check=True,
                capture_output=True,
            )

        ours_list: list[float] = []
        theirs_list: list[float] = []
        before = here_git.commands
        for _ in range(runs):
            other_host_beats()
            theirs_list.append(timed(ls_remote_and_fetch))
            ours_list.append(timed(lambda: here.read_all() and None))
        commands = (here_git.commands - before) / runs
        rows.append(
            Row(
                "read_all after 16 claims changed",
                Figure(ours_list),
                Figure(theirs_list),
                "`git ls-remote` + `git fetch` of 16 refs",
                notes=f"{commands:.1f} git commands per call",
                extra={"git": commands},
            )
        )

        # Claiming: what starting a task adds.
        board = here.read_all()
        row(
            "claim (with this tick's board)",
            lambda: here.claim(next(tasks), 1, T0, board=board) and None,
            push_one,
            "`git push` of one ref",
            here_git,
        )
        row(
            "claim (reads the task first)",
            lambda: here.claim(next(tasks), 1, T0) and None,
            push_one,
            "`git push` of one ref",
            here_git,
        )

        # Heartbeats: what a tick with live workers adds.
        for n in (1, 4, 16):
            live = [next(tasks) for _ in range(n)]
            for task in live:
                here.claim(task, 1, T0)
            beats = itertools.count(1)

            def beat(live: list[str] = live, beats: Any = beats) -> None:
                done = here.heartbeat(dict.fromkeys(live, "running"), T0 + TTL / 3 * next(beats))
                assert len(done.refreshed) == len(live), done

            row(
                f"heartbeat of {n} claim{'s' if n > 1 else ''}, due",
                beat,
                push_one,
                "`git push` of one ref",
                here_git,
            )
            here.release(live)
        live = [next(tasks) for _ in range(16)]
        for task in live:
            here.claim(task, 1, T0)
        row(
            "heartbeat of 16 claims, not due",
            lambda: here.heartbeat(dict.fromkeys(live, "running"), T0 + timedelta(minutes=1)) and None,
            ls_remote,
            "`git ls-remote`",
            here_git,
        )
        here.release(live)

        # The fenced landing against the single-host landing push: the claims are made untimed.
        landing: dict[str, Any] = {}

        def next_landing() -> dict[str, Any]:
            base = git(here_path, "rev-parse", f"origin/{BASE}")
            commit = git(here_path, "commit-tree", "-p", base, "-m", "a landing", f"{base}^{{tree}}")
            return {"base": base, "commit": commit}

        def claim_four() -> None:
            landing.update(next_landing(), tasks=[next(tasks) for _ in range(4)])
            for task in landing["tasks"]:
                here.claim(task, 1, T0)

        def fenced() -> None:
            fence = here.fence(landing["tasks"])
            updates = [RefUpdate(f"refs/heads/{BASE}", landing["commit"], landing["base"]), *fence.updates]
            assert push_atomic(here_git, remote="origin", updates=updates, timeout=60).ok
            here.forget(landing["tasks"])

        def plain() -> None:
            step = next_landing()
            pushed = push_with_lease(
                here_git,
                remote="origin",
                commit=step["commit"],
                branch=BASE,
                expected=step["base"],
                timeout=60,
            )
            assert pushed.status.value == "ok", pushed

        ours, theirs, commands = measure(runs, fenced, plain, here_git, prepare=claim_four)
        rows.append(
            Row(
                "landing push fencing 4 claims",
                ours,
                theirs,
                "`push_with_lease` of the base alone",
                notes=f"{commands:.1f} git commands per call",
                extra={"git": commands},
            )
        )
        del origin
    print_table(rows)
    return rows


if __name__ == "__main__":
    run(runs_from_argv(RUNS))
    sys.exit(0)
