"""`ralph demo`: the whole loop in a sandbox, with a scripted agent instead of a real one.

It builds a bare `origin` and a control clone in a temporary directory (or --dir), queues sample
tasks — a dependency chain, two tasks that edit the same line, one whose first try fails the CI
gate — and runs ticks until every task has landed or is blocked. Then it prints the base branch's
history and `ralph status`. Nothing outside the sandbox is touched, and no model is called.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import click

from ralph import clock, sandbox
from ralph.checkout import Checkout, open_checkout
from ralph.commands.status import build_status, render_status
from ralph.config import AgentConfig, CiConfig, Config, GitConfig, SandboxConfig, render_config
from ralph.errors import ExitCode, RalphError
from ralph.git import Git, PushStatus, push_with_lease
from ralph.queue import Priority, QueueFile, Task, TaskStatus, empty_queue_file, render_queue_file
from ralph.state import Lifecycle, Worker, load_state
from ralph.tick import TickOptions, run_tick

logger = logging.getLogger(__name__)

BASE = "main"
TICK_PAUSE_S = 0.5
DEADLINE_S = 300

# The demo's CI gate: it fails while any tracked file outside .ralph/ still says FIXME (the word is
# split so that this file passes its own check; .ralph/ holds the queue, whose task text may say it).
CI_SCRIPT = """\
import subprocess, sys
word = "FIX" + "ME"
listed = subprocess.run(["git", "ls-files", ":!.ralph"], capture_output=True, text=True, check=True)
files = listed.stdout.split()
bad = [f for f in files if word in open(f, errors="replace").read()]
for f in bad:
    print(f"ci: {f} still says {word}")
print("ci: ok" if not bad else f"ci: {len(bad)} file(s) to fix")
sys.exit(1 if bad else 0)
"""

# Each directive is read by contrib/agents/scripted-agent (its docstring lists them).
SAMPLE_TASKS = [
    ("Add a greeting module", "scripted-agent: write greet.py def greet(name): return f'Hello, {name}'", []),
    (
        "Add a farewell next to the greeting",
        "scripted-agent: append greet.py def bye(name): return f'Bye, {name}'",
        ["RQ-0001"],
    ),
    (
        "Document greet.py",
        "scripted-agent: write docs/greet.md greet() and bye() say hello and goodbye",
        ["RQ-0002"],
    ),
    ("Set the default greeting to Hello", "scripted-agent: write settings.ini greeting = Hello", []),
    ("Set the default greeting to Hi", "scripted-agent: write settings.ini greeting = Hi", []),
    ("Write release notes", "scripted-agent: write NOTES.md Release notes: FIXME fill in", []),
]


def scripted_agent() -> Path:
    """The scripted agent: shipped inside the wheel, or in contrib/ of a source checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (
        package / "_demo" / "scripted-agent",
        package.parent / "contrib" / "agents" / "scripted-agent",
    ):
        if candidate.is_file():
            return candidate
    raise RalphError("the scripted demo agent is missing from this installation; reinstall ralph")


def demo(*, directory: Path | None, workers: int) -> ExitCode:
    root = _sandbox(directory)
    _identify()
    origin, control = root / "origin.git", root / "control"
    boxes = sandbox.probe()
    _seed(root, origin, control, boxed=boxes.ok)
    click.echo(f"ralph demo: sandbox in {root}")
    if not boxes.ok:
        # The one place a job may run unboxed without sandbox.mode = "none" in a person's config: a
        # throwaway directory, scripted agents, no model, so the Quickstart works on a fresh machine.
        click.echo(f"ralph demo: running jobs without a box: {boxes.problem}", err=True)
    click.echo(
        f"ralph demo: {len(SAMPLE_TASKS)} tasks queued on origin/{BASE}; ticking with --workers {workers}"
    )
    checkout = open_checkout(control)
    deadline = time.monotonic() + DEADLINE_S
    ticks = 0
    while True:
        ticks += 1
        now = clock.now()
        run_tick(checkout, TickOptions(workers=workers, allow_root=True), now)
        state = load_state(checkout.paths.state, now=now, target_branch=BASE, remote="origin")
        if len(state.workers) == len(SAMPLE_TASKS) and all(_settled(w, checkout) for w in state.workers):
            break
        if time.monotonic() > deadline:
            raise RalphError(
                f"the demo did not finish within {DEADLINE_S}s; look at {root} (`ralph -C {control} status`)"
            )
        time.sleep(TICK_PAUSE_S)
    click.echo(f"\n== {BASE} on origin after {ticks} ticks ==")
    click.echo(Git(origin).run("log", "--graph", "--oneline", BASE).out)
    click.echo("\n== ralph status ==")
    click.echo(render_status(build_status(checkout, clock.now()), clock.now()))
    click.echo(f"\nThe sandbox stays in {root}; look around, then remove it with: rm -rf {root}")
    landed = sum(1 for w in state.workers if w.lifecycle is Lifecycle.COMPLETED)
    return ExitCode.OK if landed == len(SAMPLE_TASKS) else ExitCode.ERROR


def _settled(worker: Worker, checkout: Checkout) -> bool:
    """Landed, blocked for a person, or failed with no attempt left: no tick will change it."""
    if worker.lifecycle in (Lifecycle.COMPLETED, Lifecycle.BLOCKED_PUSH):
        return True
    return worker.lifecycle is Lifecycle.FAILED and (
        worker.next_attempt_at is None or worker.attempt >= checkout.config.agent.max_attempts
    )


def _sandbox(directory: Path | None) -> Path:
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="ralph-demo-"))
    if directory.exists() and any(directory.iterdir()):
        raise RalphError(f"--dir {directory} is not empty; give a new or empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    return directory.resolve()


def _identify() -> None:
    # The sandbox's commits need an author even on a machine where git has none configured; the
    # agents' jobs inherit these.
    for key, value in (
        ("GIT_AUTHOR_NAME", "ralph demo"),
        ("GIT_AUTHOR_EMAIL", "demo@ralph.invalid"),
        ("GIT_COMMITTER_NAME", "ralph demo"),
        ("GIT_COMMITTER_EMAIL", "demo@ralph.invalid"),
    ):
        os.environ.setdefault(key, value)


def _seed(root: Path, origin: Path, control: Path, *, boxed: bool) -> None:
    Git(root).run("init", "--quiet", "--bare", "--initial-branch", BASE, str(origin))
    Git(root).run("clone", "--quiet", str(origin), str(control))
    git = Git(control)
    git.run("checkout", "--quiet", "-B", BASE)
    (control / "README.md").write_text("# demo project\n\nA sandbox made by `ralph demo`.\n")
    (control / "ci.py").write_text(CI_SCRIPT)
    (control / ".gitignore").write_text(".ralph/cache/\n.ralph/workspaces/\n")
    ralph_dir = control / ".ralph"
    ralph_dir.mkdir()
    config = Config(
        git=GitConfig(base_branch=BASE),
        agent=AgentConfig(
            runner="command",
            command=[str(scripted_agent()), "{prompt_file}"],
            timeout_minutes=5,
            retry_backoff_minutes=[0],
        ),
        ci=CiConfig(command=[sys.executable, "ci.py"], timeout_minutes=5),
        sandbox=SandboxConfig(mode="bwrap" if boxed else "none"),
    )
    (ralph_dir / "config.toml").write_bytes(render_config(config))
    now = clock.to_seconds(clock.now())
    tasks = [
        Task(
            id=f"RQ-{n:04d}",
            status=TaskStatus.TODO,
            title=title,
            description=description,
            priority=Priority.MEDIUM,
            created_at=now,
            updated_at=now,
            depends_on=deps,
        )
        for n, (title, description, deps) in enumerate(SAMPLE_TASKS, 1)
    ]
    (ralph_dir / "queue.json").write_bytes(render_queue_file(QueueFile(version=1, tasks=tasks)))
    (ralph_dir / "done.json").write_bytes(render_queue_file(empty_queue_file()))
    git.run("add", "-A")
    git.run("commit", "--quiet", "-m", "A demo project with a ralph queue")
    head = git.run("rev-parse", "HEAD").out
    created = push_with_lease(git, remote="origin", commit=head, branch=BASE, expected="", timeout=60)
    if created.status is not PushStatus.OK:
        raise RalphError(f"could not set up the sandbox's origin: {created.message}")
    git.run("fetch", "--quiet", "origin")
    git.run("remote", "set-head", "origin", BASE)
