"""A rival: another clone of origin whose owner pushes an unrelated commit to main every few seconds.

Each rival is a process of its own (`python bench/rival.py CLONE LOG PERIOD SEED`): every PERIOD
seconds (each wait drawn from 0.8 to 1.2 x PERIOD, the first half as long) it commits a new file of its
own (`rival/<name>-<n>.txt`) and pushes it as a person would, `git pull --rebase && git push`, again
at once while the push is refused because main moved. It writes one line per push attempt to LOG:
`<unix time> pushed <n>` or `<unix time> refused <n>`: the rival's side of the push races. It stops
at SIGTERM, between two attempts.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from common import BASE, PYTHON, git

_stop = False


def _on_term(signum: int, frame: FrameType | None) -> None:
    global _stop
    _stop = True


def _pause(seconds: float) -> None:
    end = time.monotonic() + seconds
    while not _stop and time.monotonic() < end:
        time.sleep(min(0.05, end - time.monotonic()))


def loop(clone: Path, log: Path, period: float, seed: int) -> None:
    rng = random.Random(seed)
    name = clone.name
    n = 0
    _pause(period * rng.uniform(0.4, 0.6))
    with open(log, "a") as out:
        while not _stop:
            n += 1
            path = clone / "rival" / f"{name}-{n}.txt"
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"{name} change {n}\n")
            git(clone, "add", "-A")
            git(clone, "commit", "-q", "-m", f"rival commit {name}-{n}")
            while not _stop:
                git(clone, "pull", "-q", "--rebase", "origin", BASE)
                pushed = subprocess.run(
                    ["git", "push", "-q", "origin", f"HEAD:{BASE}"], cwd=clone, capture_output=True
                )
                out.write(f"{time.time():.3f} {'pushed' if pushed.returncode == 0 else 'refused'} {n}\n")
                out.flush()
                if pushed.returncode == 0:
                    break
            _pause(period * rng.uniform(0.8, 1.2))


class Rivals:
    """`with Rivals(origin, root, count, period) as rivals:` runs `count` rival processes meanwhile."""

    def __init__(self, origin: Path, root: Path, count: int, period: float, seed: int = 0) -> None:
        self.root = root
        self.clones = [root / f"rival{k}" for k in range(count)]
        self.logs = [root / f"rival{k}.log" for k in range(count)]
        self.period = period
        self.seed = seed
        for clone in self.clones:
            git(root, "clone", "-q", str(origin), str(clone))
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Rivals:
        here = Path(__file__).resolve()
        for k, (clone, log) in enumerate(zip(self.clones, self.logs, strict=True)):
            self._procs.append(
                subprocess.Popen(
                    [PYTHON, str(here), str(clone), str(log), str(self.period), str(self.seed + k)],
                    stdin=subprocess.DEVNULL,
                    stderr=open(self.root / f"rival{k}.err", "wb"),  # noqa: SIM115 (closed with the process)
                )
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self._procs:
            p.send_signal(signal.SIGTERM)
        for p in self._procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for k, p in enumerate(self._procs):
            if p.returncode not in (0, -signal.SIGTERM):
                err = (self.root / f"rival{k}.err").read_text()[-500:]
                raise RuntimeError(f"rival {k} failed (exit {p.returncode}): {err}")

    def counts(self) -> tuple[int, int]:
        """(pushes that landed, pushes refused), over every rival's log."""
        pushed = refused = 0
        for log in self.logs:
            for line in log.read_text().splitlines() if log.exists() else []:
                pushed += line.split()[1] == "pushed"
                refused += line.split()[1] == "refused"
        return pushed, refused


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_term)
    loop(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
