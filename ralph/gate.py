"""The CI gate's first step, run inside its job: check out exactly the commit to verify, then exec the gate.

    python -P gate.py <commit> <ci argv...>

The tick never checks out files in a workspace itself: a checkout runs the clean and smudge filters
the workspace's own config names, which the agent controls. Here, inside the job, that runs with no
more rights than the agent had, and the gate then judges the commit the tick will push. Run by path
with -P, so nothing in the workspace can shadow a module; it imports only the standard library.
"""

from __future__ import annotations

import os
import subprocess
import sys

UNTRUSTED = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: gate.py COMMIT CI-ARGV... (started by ralph's CI job)\n")
        return 2
    commit, command = argv[1], argv[2:]
    checkout = subprocess.run(["git", *UNTRUSTED, "checkout", "--quiet", "--force", "--detach", commit])
    if checkout.returncode != 0:
        sys.stderr.write(f"ralph gate: could not check out {commit} for the CI gate\n")
        return 125
    sys.stdout.flush()
    os.execvp(command[0], command)  # same pid, same process group: the job's deadline still applies
    return 127  # pragma: no cover (execvp does not return)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
