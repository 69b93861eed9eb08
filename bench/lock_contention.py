"""Benchmark 9: the lock first. What a tick costs when it loses the tick lock, on a loaded machine.

ralph takes its tick lock with the standard library alone (ralph.entry), before any heavy import, so a
tick that finds the lock held should cost little more than the interpreter's start. The machine is
loaded by the benchmark itself: one busy loop per core (`python -c "while True: pass"`), started
before and ended after each part.

  - A losing tick: this process holds the lock (an `flock` on `state.json.lock`, as a running tick
    does) while `python -m ralph -C <control> run --allow-root` is started and exits 75. Paired,
    interleaved, with `python -c "import fcntl"`, the floor the issue names (the interpreter's start
    and the lock's module). Also measured with the machine idle, for reference.
  - Eight ticks started at once, nobody holding the lock: one wins and runs a full no-op tick (the idle
    stamp is removed before each round, so the winner holds the lock for a whole tick, as when there
    is work), the others find the lock held and exit 75. Reported: the losers' median and p95 time
    from the common start to their exit, over every round, and how the ticks ended.

    python bench/lock_contention.py [--runs N]
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time

from common import (
    PYTHON,
    Figure,
    Project,
    Row,
    heading,
    loaded_machine,
    make_project,
    percentile,
    print_table,
    runs_from_argv,
    sandbox,
    timed,
)

RUNS = 15
ROUNDS = 10
AT_ONCE = 8


def tick_argv(project: Project) -> list[str]:
    return [PYTHON, "-m", "ralph", "-C", str(project.control), "run", "--allow-root"]


def losing_tick(project: Project) -> float:
    start = time.perf_counter()
    done = subprocess.run(tick_argv(project), capture_output=True)
    elapsed = time.perf_counter() - start
    assert done.returncode == 75, f"the losing tick exited {done.returncode}: {done.stderr.decode()[-300:]}"
    return elapsed


def import_fcntl() -> float:
    return timed(lambda: subprocess.run([PYTHON, "-c", "import fcntl"], check=True))


def pairs(project: Project, runs: int) -> tuple[Figure, Figure]:
    """A losing tick and the floor, interleaved, while this process holds the tick lock."""
    fd = os.open(project.cache / "state.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since 2026-01-01T00:00:00Z\n".encode(), 0)
        ralph, floor = Figure([]), Figure([])
        for _ in range(runs):
            ralph.runs.append(losing_tick(project))
            floor.runs.append(import_fcntl())
    finally:
        os.close(fd)
    return ralph, floor


def at_once(project: Project) -> list[tuple[int, float]]:
    """Eight ticks started together: (exit code, seconds from the common start to its exit) each."""
    project.clear_stamp()
    out: list[tuple[int, float]] = []
    lock = threading.Lock()
    start = time.perf_counter()
    procs = [
        subprocess.Popen(tick_argv(project), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(AT_ONCE)
    ]

    def wait(p: subprocess.Popen[bytes]) -> None:
        code = p.wait()
        with lock:
            out.append((code, time.perf_counter() - start))

    threads = [threading.Thread(target=wait, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def run(runs: int = RUNS) -> list[Row]:
    heading(f"9. the lock first: a losing tick, and {AT_ONCE} ticks at once, on a loaded machine")
    with sandbox("lock") as root:
        project = make_project(root)
        project.tick()
        quiet_ralph, quiet_floor = pairs(project, runs)
        with loaded_machine() as loops:
            loaded_ralph, loaded_floor = pairs(project, runs)
            load = os.getloadavg()[0]
            ends: list[tuple[int, float]] = []
            for _ in range(ROUNDS):
                ends += at_once(project)
        assert project.workers() == []
    losers = [s for code, s in ends if code == 75]
    codes: dict[int, int] = {}
    for code, _ in ends:
        codes[code] = codes.get(code, 0) + 1
    rows = [
        Row("losing tick, loaded machine", loaded_ralph, loaded_floor, 'python -c "import fcntl"'),
        Row("losing tick, idle machine", quiet_ralph, quiet_floor, "(same floor)"),
    ]
    if losers:
        rows.append(
            Row(
                f"{AT_ONCE} ticks at once, loaded: the losers' exit",
                Figure(losers),
                notes=f"{len(losers)} losers over {ROUNDS} rounds; "
                f"median {Figure(losers).median * 1000:.0f} ms, "
                f"p95 {percentile(losers, 95) * 1000:.0f} ms; exit codes {codes}",
                extra={"p95": percentile(losers, 95), "exit_codes": codes},
            )
        )
    print_table(rows)
    print(f"  {len(loops)} busy loops; load average (1 min) {load:.1f} while loaded")
    if losers:
        print(
            f"  the losers' exit: median {Figure(losers).median * 1000:.0f} ms, "
            f"p95 {percentile(losers, 95) * 1000:.0f} ms"
        )
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
