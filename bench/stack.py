"""Benchmark 11: what ralph's own stack costs before ralph does anything.

Landing and spawn (benchmarks 3 and 4) are compared with floors that are shell scripts running git.
ralph is a Python process that imports pydantic, click and filelock, and runs git through sh. This
measures those fixed costs on their own, so the two figures can be split into what the stack costs and
what ralph's own work costs:
  - processes, each `python -P -c <imports>` from start to exit (floor: `python -P -c pass`): a full
    tick's imports (`ralph.commands.run`), those and sh (a tick that runs git imports sh on its first
    command), sh alone, and what a job imports before its checkout's first git command;
  - one git command (`git rev-parse HEAD`) through ralph.git.Git (sh) against `subprocess.run`, in
    a process that has imported a full tick's modules and holds the tick lock through ralph.lock, as
    a tick does (filelock's fork hooks run at every fork there), and in one that imported ralph.git
    alone.
From these, a lower bound for the landing tick of benchmark 4: its imports and sh, plus its git
commands' overhead through sh, with ralph's own logic and git's own work taken as free.

    python bench/stack.py [--runs N]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common import PYTHON, Figure, Row, git, heading, print_table, runs_from_argv, sandbox, timed

RUNS = 15
COMMANDS = 40  # git commands per measurement of one command's cost, in one process
LANDING_COMMANDS = 27  # the landing tick's git commands, as benchmark 4 counts them (bench/README.md)
ROOT = Path(__file__).resolve().parent.parent

IMPORTS = {
    "nothing (`pass`)": "pass",
    "a full tick's modules": "import ralph.commands.run",
    "a full tick's modules and sh": "import ralph.commands.run, sh",
    "sh alone": "import sh",
    "a job, until its checkout's first git command": "import ralph.job, ralph.workspace, sh",
}

# Run in a process of its own: with "tick", a tick's modules imported and the tick lock held (with
# "bare", ralph.git alone), then COMMANDS git commands through ralph's Git and through subprocess.run,
# alternately; prints the per-command seconds.
PER_COMMAND = """
import json, subprocess, sys, time
from datetime import UTC, datetime
from pathlib import Path
from ralph.git import Git

repo, lock_path, count, kind = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if kind == "tick":
    import ralph.commands.run
    from ralph.lock import TickLock

    TickLock(lock_path, now=datetime.now(UTC)).acquire()
git = Git(repo)
git.run("rev-parse", "HEAD")  # sh imported, outside the timing
through_sh, through_subprocess = [], []
for _ in range(count):
    start = time.perf_counter()
    git.run("rev-parse", "HEAD")
    through_sh.append(time.perf_counter() - start)
    start = time.perf_counter()
    subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, check=True)
    through_subprocess.append(time.perf_counter() - start)
through_sh.sort()
through_subprocess.sort()
print(json.dumps([through_sh[len(through_sh) // 2], through_subprocess[len(through_subprocess) // 2]]))
"""


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-P", "-c", code, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )


def run(runs: int = RUNS) -> list[Row]:
    heading("11. the stack: imports, and one git command through sh")
    figures: dict[str, Figure] = {label: Figure([]) for label in IMPORTS}
    for _ in range(runs):  # interleaved, so a busy moment weighs on every line alike
        for label, code in IMPORTS.items():
            figures[label].runs.append(timed(lambda code=code: python(code)))
    floor = figures["nothing (`pass`)"]
    rows = [
        Row(f"python -c '{IMPORTS[label]}'", figures[label], floor, "python -c pass")
        for label in IMPORTS
        if label != "nothing (`pass`)"
    ]
    with sandbox("stack") as root:
        repo = root / "repo"
        repo.mkdir()
        git(repo, "init", "-q")
        git(repo, "commit", "-q", "--allow-empty", "-m", "one commit")
        measured = {kind: (Figure([]), Figure([])) for kind in ("tick", "bare")}
        for _ in range(max(5, runs // 3)):
            for kind, (by_sh, by_subprocess) in measured.items():
                lock = str(root / "state.json.lock")
                sh_s, subprocess_s = json.loads(
                    python(PER_COMMAND, str(repo), lock, str(COMMANDS), kind).stdout
                )
                by_sh.runs.append(sh_s)
                by_subprocess.runs.append(subprocess_s)
    for kind, where in (("tick", "in a tick"), ("bare", "with nothing but ralph.git imported")):
        by_sh, by_subprocess = measured[kind]
        rows.append(
            Row(
                f"one git command {where}, through sh",
                by_sh,
                by_subprocess,
                "the same, subprocess.run",
                notes=f"the median of {COMMANDS} in each of {len(by_sh.runs)} processes",
            )
        )
    through_sh, through_subprocess = measured["tick"]
    print_table(rows)
    print(
        "  one git command, medians: "
        + "; ".join(
            f"{where} {measured[kind][0].median * 1000:.1f} ms through sh,"
            f" {measured[kind][1].median * 1000:.1f} ms through subprocess.run"
            for kind, where in (("tick", "in a tick"), ("bare", "with ralph.git alone"))
        )
    )
    imports = figures["a full tick's modules and sh"].median - floor.median
    overhead = through_sh.median - through_subprocess.median
    bound = floor.median + imports + LANDING_COMMANDS * overhead
    parts = (
        f"Python {floor.median * 1000:.0f} ms",
        f"imports and sh {imports * 1000:.0f} ms",
        f"{LANDING_COMMANDS} x {overhead * 1000:.1f} ms of sh",
    )
    print(
        "  the landing tick's lower bound, with its logic and git's own work free: "
        + " + ".join(parts)
        + f" = {bound * 1000:.0f} ms (the floor of benchmark 4, the bare script with all its git work,"
        " takes 210-230 ms on the 2-CPU machine of bench/README.md)"
    )
    rows[0].extra.update(landing_bound_s=bound, sh_overhead_s=overhead, landing_commands=LANDING_COMMANDS)
    return rows


if __name__ == "__main__":
    from common import hermetic

    hermetic()
    sys.exit(0 if run(runs_from_argv(RUNS)) else 1)
