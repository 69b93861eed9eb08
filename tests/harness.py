"""A project under ralph for tick tests: a bare origin, a control clone set up for the scripted agent,
and helpers to add tasks, run ticks (in this process or as `python -m ralph`), and look at the result.

Everything is real: git repositories, detached job processes, the scripted agent from contrib/.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import BASE, git

from ralph import clock, proc
from ralph.checkout import open_checkout
from ralph.commands.task import add as add_task
from ralph.config import Config, render_config
from ralph.queue import empty_queue_file, render_queue_file
from ralph.state import Lifecycle, State, Worker, load_state
from ralph.tick import TickOptions, TickReport, run_tick

REPO = Path(__file__).resolve().parent.parent
SCRIPTED_AGENT = REPO / "contrib" / "agents" / "scripted-agent"

# A CI gate for tests: fails (and says where) while any tracked file contains FIXME. (The word is
# spelled in two halves here so that this script does not fail its own check.)
CI_SCRIPT = """\
import subprocess, sys
word = "FIX" + "ME"
files = subprocess.run(["git", "ls-files", ":!.ralph"], capture_output=True, text=True).stdout.split()
bad = [f for f in files if word in open(f, errors="replace").read()]
for f in bad:
    print(f"ci: {word} left in {f}")
sys.exit(2 if bad else 0)
"""


@dataclass
class Project:
    origin: Path
    control: Path
    settings: dict[str, Any] = field(default_factory=dict)

    # --- set-up ------------------------------------------------------------------------------------

    def configure(self, **sections: dict[str, Any]) -> None:
        """Rewrite .ralph/config.toml with these section overrides, commit and push it."""
        for name, values in sections.items():
            self.settings.setdefault(name, {}).update(values)
        defaults: dict[str, dict[str, Any]] = {
            "git": {"base_branch": BASE},
            "parallel": {"kill_grace_seconds": 1},
            "agent": {
                "runner": "command",
                "command": [str(SCRIPTED_AGENT), "{prompt_file}"],
                "timeout_minutes": 2,
                "retry_backoff_minutes": [0],
            },
            "ci": {"command": [sys.executable, ".ci-check.py"]},
            # Tests drive every tick themselves; tests/test_follow.py turns job-followed ticks on.
            "run": {"follow_jobs": False},
        }
        sections_in_use = {**defaults, **self.settings}
        config = Config.model_validate(
            {name: {**defaults.get(name, {}), **self.settings.get(name, {})} for name in sections_in_use}
        )
        (self.control / ".ralph" / "config.toml").write_bytes(render_config(config))
        self.commit_and_push("configure ralph")

    def commit_and_push(self, message: str) -> None:
        # `ralph task add` may have moved origin's base with plumbing; catch up first, keeping our edits.
        git(self.control, "fetch", "-q", "origin")
        behind = subprocess.run(
            ["git", "merge-base", "--is-ancestor", f"origin/{BASE}", "HEAD"], cwd=self.control
        )
        if behind.returncode:
            git(self.control, "rebase", "-q", "--autostash", f"origin/{BASE}")
        git(self.control, "add", "-A")
        if git(self.control, "status", "--porcelain"):
            git(self.control, "commit", "-q", "-m", message)
        git(self.control, "push", "-q", "origin", f"HEAD:{BASE}")

    def add(self, title: str, description: str | None = None, depends_on: Sequence[str] = ()) -> str:
        """`ralph task add`, pushed to origin like a person would."""
        before = self.queue_ids()
        add_task(
            start=self.control,
            title=title,
            description=description,
            depends_on=list(depends_on),
            priority="medium",
            position="bottom",  # the queue in the order the test wrote it
        )
        new = [t for t in self.queue_ids() if t not in before]
        assert len(new) == 1, new
        return new[0]

    def queue_ids(self) -> list[str]:
        git(self.control, "fetch", "-q", "origin")
        raw = git(self.control, "show", f"origin/{BASE}:.ralph/queue.json")
        return [t["id"] for t in json.loads(raw)["tasks"]]

    # --- ticks -------------------------------------------------------------------------------------

    def tick(self, **options: Any) -> TickReport:
        return run_tick(open_checkout(self.control), TickOptions(allow_root=True, **options), clock.now())

    def tick_process(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`python -m ralph run` in its own process, as cron would start it."""
        return subprocess.run(
            [sys.executable, "-m", "ralph", "-C", str(self.control), "run", "--allow-root", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
        )

    def run_until(
        self,
        done: Callable[[State], bool],
        *,
        timeout: float = 90,
        every: Callable[[State], None] | None = None,
        **options: Any,
    ) -> State:
        """Tick, as cron would, until `done(state)`; `every` checks an invariant after each tick."""
        deadline = time.monotonic() + timeout
        while True:
            self.tick(**options)
            state = self.state()
            if every is not None:
                every(state)
            if done(state):
                return state
            assert time.monotonic() < deadline, f"not done after {timeout}s: {summary(state)}"
            time.sleep(0.2)

    # --- looking -----------------------------------------------------------------------------------

    @property
    def paths(self) -> Any:
        return open_checkout(self.control).paths

    def state(self) -> State:
        return load_state(self.paths.state, now=clock.now(), target_branch=BASE, remote="origin")

    def worker(self, task_id: str) -> Worker:
        worker = self.state().worker(task_id)
        assert worker is not None, f"no worker for {task_id}"
        return worker

    def origin_log(self) -> list[str]:
        """Subjects on origin's base branch, newest first."""
        return git(self.origin, "log", "--format=%s", BASE).splitlines()

    def origin_file(self, path: str) -> str:
        return git(self.origin, "show", f"{BASE}:{path}")

    def origin_tasks(self, name: str) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = json.loads(self.origin_file(f".ralph/{name}.json"))["tasks"]
        return tasks

    def events(self) -> list[dict[str, Any]]:
        path = self.paths.events
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def wait_for_jobs(self, timeout: float = 60) -> None:
        """Until every recorded job has written its result (the next tick will read them)."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [
                w.task_id
                for w in self.state().workers
                if w.lifecycle in Lifecycle.active() and w.job and not Path(w.job.result_path).exists()
            ]
            if not pending:
                return
            assert time.monotonic() < deadline, f"jobs still running after {timeout}s: {pending}"
            time.sleep(0.1)


def same_code(project: Project, a: str, b: str) -> bool:
    """Whether two commits (in the control repository, where ralph keeps its train positions) have the
    same tree but for ralph's queue and done files."""
    excludes = [":(exclude).ralph/queue.json", ":(exclude).ralph/done.json"]
    diff = subprocess.run(["git", "diff", "--quiet", a, b, "--", ".", *excludes], cwd=project.control)
    return diff.returncode == 0


def archive_count(repo: Path, task_id: str) -> int:
    """How many commits on the base of `repo` say they land (archive) `task_id`: one per landing."""
    bodies = git(repo, "log", "--format=%B%x00", BASE).split("\0")
    return sum(1 for body in bodies if re.search(rf"^ralph: archive {re.escape(task_id)}\b", body, re.M))


def all_landed(count: int) -> Callable[[State], bool]:
    return lambda s: len(s.workers) == count and all(w.lifecycle is Lifecycle.COMPLETED for w in s.workers)


def summary(state: State) -> str:
    return ", ".join(f"{w.task_id}={w.lifecycle}({w.last_error or ''})" for w in state.workers)


def make_project(origin: Path, control: Path, **sections: dict[str, Any]) -> Project:
    """The control clone with .ralph/ set up (queue tracked on origin) and the test CI gate."""
    ralph_dir = control / ".ralph"
    ralph_dir.mkdir()
    for name in ("queue.json", "done.json"):
        (ralph_dir / name).write_bytes(render_queue_file(empty_queue_file()))
    (control / ".gitignore").write_text(".ralph/cache/\n.ralph/workspaces/\n")
    (control / ".ci-check.py").write_text(CI_SCRIPT)
    project = Project(origin=origin, control=control)
    project.configure(**sections)
    return project


# --- what a CI gate saw ------------------------------------------------------------------------------


class VerdictRecorder:
    """A server on 127.0.0.1 to which a test's CI gate reports each verdict, one line per POST.

    A gate runs in its box: the only place it can write to is its own checkout, which ralph deletes.
    Its network is the way out a test can listen on (and proves sandbox.gate_network works).
    """

    def __init__(self, record: Path) -> None:
        self.record = record
        record.touch()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with recorder.lock, open(recorder.record, "ab") as f:
                    f.write(body.rstrip(b"\n") + b"\n")
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Posts "<tree> pass|fail" for the commit it judged to CI_RECORD_URL (a VerdictRecorder).
REPORT_VERDICT = """
import os, urllib.request
def report(line):
    urllib.request.urlopen(os.environ["CI_RECORD_URL"], data=line.encode(), timeout=30).read()
"""


def record_gates(project: Project, record: Path, script: str) -> VerdictRecorder:
    """Make `script` (which reports through REPORT_VERDICT) the project's CI gate, with CI_RECORD_URL
    passed into its box, and start the recorder it reports to (appending to `record`). The caller puts
    the recorder's url in ralph's environment as CI_RECORD_URL and closes it."""
    recorder = VerdictRecorder(record)
    project.configure(sandbox={"env_passthrough": ["CI_RECORD_URL"]})
    (project.control / ".ci-check.py").write_text(script)
    project.commit_and_push("record every CI verdict")
    return recorder


# --- processes ---------------------------------------------------------------------------------------


def live_wrappers(control: Path) -> dict[str, list[int]]:
    """Live `python -m ralph.job` processes of this checkout, by task id (from their spec path).

    A wrapper that has written its result is finished, only not yet gone: the next tick may already
    have read that result and started the task's next job.
    """
    runs = str(control / ".ralph" / "cache" / "parallel" / "runs") + "/"
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if "ralph.job" not in args or not args[-1].startswith(runs):
            continue
        stat = proc.read_stat(int(entry.name))
        if stat is None or stat.state in ("Z", "X"):
            continue
        if _result_written(Path(args[-1])):
            continue
        task_id = args[-1][len(runs) :].split("/")[0]
        found.setdefault(task_id, []).append(int(entry.name))
    # A wrapper's child between fork and exec (git during its checkout, the command) still shows the
    # wrapper's command line: it is not a second job.
    return {task_id: [pid for pid in pids if _parent(pid) not in pids] for task_id, pids in found.items()}


def _parent(pid: int) -> int | None:
    stat = proc.read_stat(pid)
    return None if stat is None else stat.ppid


def _result_written(spec_path: Path) -> bool:
    try:
        return Path(json.loads(spec_path.read_text())["result_path"]).exists()
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float = 30, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message or "condition not met in time"
        time.sleep(0.05)


def install_rival_hook(origin: Path, *, times: int, change: str | None = None) -> Path:
    """A pre-receive hook on the bare origin that lands a rival commit on main while a push waits.

    The waiting push then loses the server's compare-and-swap, exactly as when another host pushed
    a moment earlier: `[remote rejected] (failed to update ref)`. It does so for the next `times`
    pushes to main. With `change`, the rival commit adds or rewrites that file (so the code moved);
    without, its tree is unchanged. Returns the counter file (how many rivals were made).
    """
    counter = origin / "rivals"
    counter.write_text("0")
    change_tree = (
        f"blob=$(date +%s%N | git hash-object -w --stdin); "
        f'GIT_INDEX_FILE="$GIT_DIR/rival-index" git read-tree "$tip"; '
        f'GIT_INDEX_FILE="$GIT_DIR/rival-index" git update-index --add --cacheinfo "100644,$blob,{change}"; '
        f'tree=$(GIT_INDEX_FILE="$GIT_DIR/rival-index" git write-tree)'
        if change
        else 'tree=$(git rev-parse "$tip^{tree}")'
    )
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        "# Test double for a concurrent pusher: see tests/harness.py install_rival_hook.\n"
        'grep -q " refs/heads/main$" || exit 0\n'
        f'n=$(cat "{counter}")\n'
        f'[ "$n" -lt {times} ] || exit 0\n'
        "unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES\n"
        "GIT_DIR=$(pwd); export GIT_DIR\n"
        "tip=$(git rev-parse refs/heads/main)\n"
        f"{change_tree}\n"
        'rival=$(echo "rival commit $n" | git commit-tree "$tree" -p "$tip")\n'
        'git update-ref refs/heads/main "$rival" "$tip"\n'
        f'echo $((n + 1)) > "{counter}"\n'
        "exit 0\n"
    )
    hook.chmod(0o755)
    return counter


def install_declining_hook(origin: Path, message: str, *, hook: str = "pre-receive") -> None:
    """A hook on the bare origin that prints `message` (any text: it is read from a file) and declines
    every push to a branch: `[remote rejected] (pre-receive hook declined)`, or `(hook declined)` for
    `update`. Pushes of ralph's claims (refs/ralph/) go through, as on a server protecting branches."""
    said = origin / f"{hook}-message"
    said.write_text(message + "\n")
    path = origin / "hooks" / hook
    branches_only = (
        'grep -q " refs/heads/" || exit 0\n'
        if hook == "pre-receive"
        else 'case "$1" in refs/heads/*) ;; *) exit 0;; esac\n'
    )
    path.write_text(f'#!/bin/sh\n{branches_only}cat "{said}" >&2\nexit 1\n')
    path.chmod(0o755)


def install_flaky_hook(origin: Path, message: str, *, every: int = 2) -> Path:
    """A pre-receive hook that declines the 1st, (1+every)th, ... push to main with `message`, as a
    server in trouble does, and lets the others through. Returns the file counting the pushes."""
    counter = origin / "flaky-pushes"
    counter.write_text("0")
    said = origin / "flaky-message"
    said.write_text(message + "\n")
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        "# Test double for a flaky server: see tests/harness.py install_flaky_hook.\n"
        'grep -q " refs/heads/main$" || exit 0\n'
        f'n=$(cat "{counter}")\n'
        f'echo $((n + 1)) > "{counter}"\n'
        f"[ $((n % {every})) -eq 0 ] || exit 0\n"
        f'cat "{said}" >&2\n'
        "exit 1\n"
    )
    hook.chmod(0o755)
    return counter


def install_rewinding_hook(origin: Path, *, to: str) -> None:
    """A pre-receive hook that rewinds main to `to` while the next push to main waits, then retires.

    The push then loses the server's compare-and-swap on the old tip: the lease at work, against a
    base someone rewound after ralph last looked.
    """
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        "# Test double for a person rewinding main: see tests/harness.py install_rewinding_hook.\n"
        'grep -q " refs/heads/main$" || exit 0\n'
        "unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES\n"
        "GIT_DIR=$(pwd); export GIT_DIR\n"
        f"git update-ref refs/heads/main {to}\n"
        'rm -f "$0"\n'
        "exit 0\n"
    )
    hook.chmod(0o755)
