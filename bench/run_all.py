"""Every benchmark, one after the other, then one table (bench/README.md explains each line).

    python bench/run_all.py [--full] [--runs N] [--json FILE]

--full     also benchmark 8, end to end with a 60 s timer (about 6 more minutes while ticks do not
           follow the jobs), and benchmark 7 three times instead of once
--runs N   runs per figure (at least 5; default: each benchmark's own, 5 to 15); benchmarks 7 and 8
           keep their own counts
--json F   also write the figures (every run) and the machine to F

Each benchmark builds its repositories in a temporary directory ($TMPDIR, else /tmp) from a fixed
seed and removes them afterwards. The landing, contention and merge-train benchmarks share one
set-up: the 20 verified workers are built once. About 9 minutes on a 2-core machine without
--full, 15 with it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import busy_base
import claims
import contention
import end_to_end
import landing
import lock_contention
import merge_train
import noop_tick
import scale
import spawn
import stack
from common import Row, cleanup_home, hermetic, machine, print_table, sandbox


def option(name: str) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


def main() -> int:
    hermetic()
    given = option("--runs")
    runs = max(5, int(given)) if given else None
    began = time.perf_counter()
    load_before = os.getloadavg()
    rows: list[Row] = []

    def go(module: Any, **kwargs: Any) -> None:
        kw = {"runs": runs} if runs else {}
        rows.extend(module.run(**kw, **kwargs))

    try:
        full = "--full" in sys.argv
        go(noop_tick)
        go(scale)
        go(spawn)
        with sandbox("landing-shared") as root:
            start = time.perf_counter()
            verified = landing.prepare(root, landing.CHANGES)
            print(
                f"\n(set-up for 4, 5 and 6: {landing.CHANGES} workers verified, blocked, retried: "
                f"{time.perf_counter() - start:.1f} s)"
            )
            go(landing, verified=verified)
            go(contention, verified=verified)
            go(merge_train, verified=verified)
        rows.extend(busy_base.run(3 if full else 1))
        go(lock_contention)
        go(claims)
        go(stack)
        if full:
            rows.extend(end_to_end.run())
    finally:
        cleanup_home()
    total = time.perf_counter() - began
    info = machine()
    print("\n== all benchmarks ==")
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python {info['python']}, "
        f"git {info['git']}; ralph {info['ralph']}; temporary directory {os.environ.get('TMPDIR', '/tmp')}"
    )
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; total {total:.0f} s; "
        "medians, [min-max] over the runs"
    )
    print_table(rows)
    out = option("--json")
    if out:
        doc = {
            "machine": info,
            "total_s": total,
            "load": [load_before, load_after],
            "rows": [
                {
                    "benchmark": r.benchmark,
                    "ralph": r.ralph.runs,
                    "floor": r.floor.runs if r.floor else None,
                    "floor_label": r.floor_label,
                    "ratio": r.ratio,
                    "notes": r.notes,
                    "extra": r.extra,
                }
                for r in rows
            ],
        }
        Path(out).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
