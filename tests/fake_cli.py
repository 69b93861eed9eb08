#!/usr/bin/env python3
"""A stand-in for a real agent CLI in tick tests, run by a preset (agent.binary points here).

It does the task's work as contrib/agents/scripted-agent does (the `scripted-agent:` directives in
the task; when that fails, it exits as that did), then prints what the real CLI printed in a recorded
case (tests/fixtures/agents/) and exits as it did. The case comes from a line of the task's
description:

    fake-cli: [remediate:] CASE [reset-in SECONDS] [hang]

`remediate:` applies it only to a CI remediation (a line without it applies only to the task's own
run); `reset-in` moves the reset the recording states to SECONDS from now; `hang` sleeps after
printing, until killed. Standard library only.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "agents"
SCRIPTED_AGENT = HERE.parent / "contrib" / "agents" / "scripted-agent"


def main() -> int:
    prompt = sys.stdin.read()
    done = subprocess.run([sys.executable, str(SCRIPTED_AGENT), "-"], input=prompt, text=True)
    mode = "remediate" if prompt.startswith("# CI FAILURE") else "task"
    block = re.search(r"```json\n(.*?)\n```", prompt, re.S)
    task = json.loads(block.group(1)) if block else {}
    wanted = None
    for line in str(task.get("description") or "").splitlines():
        m = re.match(r"fake-cli: (remediate: )?(\S+)(.*)$", line.strip())
        if m and (mode == "remediate") == bool(m.group(1)):
            wanted = m
    if wanted is None:
        return done.returncode
    name, options = wanted.group(2), wanted.group(3).split()
    output = (FIXTURES / f"{name}.log").read_bytes()
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    if "reset-in" in options and meta["reset_at"]:
        moved = int(time.time()) + int(options[options.index("reset-in") + 1])
        output = output.replace(str(meta["reset_at"]).encode(), str(moved).encode())
    sys.stdout.buffer.write(output)
    sys.stdout.flush()
    if "hang" in options:
        while True:
            time.sleep(3600)
    return done.returncode or int(meta["exit_code"] or 0)


if __name__ == "__main__":
    sys.exit(main())
