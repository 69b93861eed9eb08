"""Benchmark 5: contention. ralph lands 20 verified workers while another clone pushes an unrelated
commit to main every second.

The 20 verified workers are benchmark 4's (landing.py: verified by the CI gate, held at
`integrating`, restored from a copy for every run), landing with CI disabled. The rival is a second
clone that, once a second (the first half a second after the first tick starts), commits a new
file of its own (`rival/<n>.txt`) and pushes it; when its push is refused because main moved, it
fetches, rebases and pushes again at once, as a person's `git pull --rebase && git push` would.

ralph: ticks (as in benchmark 4) until all 20 are `completed`: the time, the push races ralph lost
(the sum of the workers' `push_attempts` in state.json: a push that lands is not counted), and that
no worker ended `blocked_push`.
Floor: benchmark 4's git-only script, with the same rival, retrying a refused push after
`git fetch` + `git rebase` (no backoff).

    python bench/contention.py [--runs N]
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import BASE, Figure, Row, git, heading, print_table, runs_from_argv, sandbox
from landing import CHANGES, Verified, check_landed, floor_setup, land_all, prepare, set_ci

RUNS = 5
PERIOD_S = 1.0


class Rival:
    """A second clone pushing an unrelated commit to main every PERIOD_S seconds, in a thread."""

    def __init__(self, origin: Path, clone: Path) -> None:
        self.clone = clone
        git(clone.parent, "clone", "-q", str(origin), str(clone))
        self.pushed = 0
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Rival:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"the rival pusher failed: {self.error}")

    def _loop(self) -> None:
        try:
            n = 0
            # The first push half a period in, then one every period.
            while not self._stop.wait(max(0.0, self._start + (n + 0.5) * PERIOD_S - time.monotonic())):
                n += 1
                self._push_one(n)
        except BaseException as e:  # reported by __exit__
            self.error = e

    def _push_one(self, n: int) -> None:
        path = self.clone / "rival" / f"{n}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"rival change {n}\n")
        git(self.clone, "add", "-A")
        git(self.clone, "commit", "-q", "-m", f"rival commit {n}")
        while not self._stop.is_set():
            pushed = subprocess.run(
                ["git", "push", "-q", "origin", f"HEAD:{BASE}"], cwd=self.clone, capture_output=True
            )
            if pushed.returncode == 0:
                self.pushed += 1
                return
            self.refused += 1
            git(self.clone, "fetch", "-q", "origin", BASE)
            git(self.clone, "rebase", "-q", f"origin/{BASE}")


FLOOR_RETRY = """\
land() {{
  git rebase -q origin/{base} "$1"
  until git push -q origin HEAD:{base} 2>/dev/null; do
    echo race >> races.txt
    git fetch -q origin {base}
    git rebase -q origin/{base}
  done
}}
"""


def floor_once(verified: Verified, root: Path) -> tuple[float, int]:
    """The git-only landing script, retrying refused pushes, against the same rival."""
    project = verified.restore()
    clone, script = floor_setup(verified, "floor-contended")
    lines = script.read_text().splitlines()
    body = [FLOOR_RETRY.format(base=BASE)]
    for line in lines[2:]:
        if line.startswith("git rebase -q"):
            body.append(f"land {line.split()[-1]}")
        elif line.startswith("git fetch") or not line.startswith("git push"):
            body.append(line)
    script.write_text("#!/bin/sh\nset -e\n" + "\n".join(body) + "\n")
    with Rival(project.origin, root / "rival-floor"):
        start = time.perf_counter()
        subprocess.run(["sh", str(script)], cwd=clone, check=True, capture_output=True)
        seconds = time.perf_counter() - start
    races_file = clone / "races.txt"
    races = len(races_file.read_text().splitlines()) if races_file.exists() else 0
    subprocess.run(["rm", "-rf", str(root / "rival-floor")], check=True)
    return seconds, races


@dataclass
class Contended:
    seconds: float
    races: int
    blocked: int
    rival_pushes: int
    ticks: int


def ralph_once(verified: Verified, root: Path) -> Contended:
    project = verified.restore()
    set_ci(project, [])
    with Rival(project.origin, root / "rival") as rival:
        landed = land_all(project, timeout=240)
    check_landed(project, verified.ids)
    subjects = project.origin_subjects()
    assert sum(1 for s in subjects if s.startswith("rival commit ")) == rival.pushed
    subprocess.run(["rm", "-rf", str(root / "rival")], check=True)
    return Contended(landed.seconds, landed.races, landed.blocked, rival.pushed, landed.ticks)


def run(runs: int = RUNS, verified: Verified | None = None, changes: int = CHANGES) -> list[Row]:
    if verified is not None:
        changes = len(verified.ids)
    heading(f"5. contention: {changes} landings while a rival pushes to main every {PERIOD_S:g} s")
    with sandbox("contention") as root:
        if verified is None:
            began = time.perf_counter()
            verified = prepare(root, changes)
            took = time.perf_counter() - began
            print(f"  set-up ({changes} workers verified, blocked, retried): {took:.1f} s")
        results: list[Contended] = []
        floors: list[tuple[float, int]] = []
        for _ in range(runs):
            results.append(ralph_once(verified, root))
            floors.append(floor_once(verified, root))
    blocked = sum(r.blocked for r in results)
    races = sorted(r.races for r in results)
    floor_races = sorted(f[1] for f in floors)
    ticks = sorted(r.ticks for r in results)
    rows = [
        Row(
            f"land {changes} under contention",
            Figure([r.seconds for r in results]),
            Figure([f[0] for f in floors]),
            "git fetch + rebase + push, retried",
            notes=f"push races per run {races} (floor {floor_races}); ticks {ticks}; "
            f"rival pushes {[r.rival_pushes for r in results]}; blocked_push: {blocked}",
            extra={"races": races, "floor_races": floor_races, "blocked": blocked},
        )
    ]
    print_table(rows)
    assert blocked == 0, f"{blocked} workers ended blocked_push"
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
