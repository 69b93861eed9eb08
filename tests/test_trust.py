"""The trust boundary: hostile agents against the default configuration (every job in its box).

Each test plays one attack with a scripted hostile agent (a shell script ralph runs as its
`command` runner) and ends with the same checks: nothing unverified reached the remote's base, the
control checkout is byte-identical, no payload ran outside the box, and the task ended failed or
blocked with a clear reason. Real bubblewrap, real git, real processes.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import BASE, git
from harness import Project, make_project, wait_until
from helpers import pids_with

from ralph import markers
from ralph.state import Lifecycle, State

# Outside CI a machine without bubblewrap skips these; under CI=true they run, and fail without it.
pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None and os.environ.get("CI") != "true",
    reason="bubblewrap is not installed (apt-get install bubblewrap)",
)


def hostile(tmp_path: Path, script: str) -> list[str]:
    """A shell script as the agent: `script` runs in the workspace with the prompt file as $1."""
    path = tmp_path / "hostile-agent"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return [str(path), "{prompt_file}"]


def snapshot(root: Path) -> dict[str, str]:
    """Every file of the control checkout but ralph's runtime, with its content hash and mode."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".ralph/cache", ".ralph/workspaces")) or "/objects/" in f"/{rel}":
            continue
        if rel.startswith(".git/") and rel.split("/")[1] in (
            "index",
            "logs",
            "refs",
            "packed-refs",
            "FETCH_HEAD",
            "ORIG_HEAD",
        ):
            continue  # ralph's own fetches and attic refs move these
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() + oct(path.stat().st_mode)
        else:
            out[rel] = "dir"
    return out


def settled(task: str) -> Callable[[State], bool]:
    def done(state: State) -> bool:
        worker = state.worker(task)
        if worker is None:
            return False
        return worker.lifecycle in Lifecycle.terminal()  # one attempt, no remediation: the end

    return done


@pytest.fixture
def project(origin: Path, control: Path) -> Project:
    return make_project(origin, control, agent={"max_attempts": 1, "max_remediations": 0})


@pytest.fixture(params=["bwrap", "none"])
def mode(request: pytest.FixtureRequest, project: Project) -> str:
    """For the guarantees that need no box: they hold with sandbox.mode = "none" too."""
    project.configure(sandbox={"mode": request.param})
    return str(request.param)


def attack(project: Project, tmp_path: Path, script: str, *, title: str = "Do the task") -> tuple[str, State]:
    """Run the hostile agent on one task until it settles; return the task id and the final state.
    Checks on the way out that the control checkout and origin's hooks were not touched."""
    project.configure(agent={"command": hostile(tmp_path, script)})
    before_control = snapshot(project.control)
    before_hooks = snapshot(project.origin / "hooks")
    task = project.add(title)
    state = project.run_until(settled(task), timeout=90)
    assert snapshot(project.control) == before_control, "the control checkout changed"
    assert snapshot(project.origin / "hooks") == before_hooks, "origin's hooks changed"
    return task, state


def assert_nothing_unverified_landed(project: Project, task: str) -> None:
    files = git(project.origin, "ls-tree", "-r", "--name-only", BASE).splitlines()
    for name in files:
        text = git(project.origin, "show", f"{BASE}:{name}")
        assert "FIX" + "ME" not in text, f"{name} on origin holds the failure the gate rejects"
    assert f"{task}: Do the task" not in project.origin_log()


BROKEN = "echo 'value = FIX''ME' > broken.txt\n"  # the test gate (harness CI_SCRIPT) fails on it


# --- the remote and the control checkout ---------------------------------------------------------------


def test_a_direct_push_to_the_remote_by_path_or_url_fails(project: Project, tmp_path: Path) -> None:
    origin, control = project.origin, project.control
    out = tmp_path / "agent-saw.txt"
    script = (
        BROKEN
        + "git add -A && git commit -qm broken\n"
        + f"cat {control}/.git/config > .ralph-saw-config 2>&1\n"
        + f"git push {origin} HEAD:refs/heads/{BASE} > .ralph-push-1 2>&1\n"
        + f"git push file://{origin} HEAD:refs/heads/{BASE} > .ralph-push-2 2>&1\n"
        + f"git push --force {origin} HEAD:refs/heads/{BASE} >> .ralph-push-1 2>&1\n"
        + f"echo done > {out}\n"
        + "exit 0\n"
    )
    task, state = attack(project, tmp_path, script)
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.FAILED
    assert worker.last_error is not None and worker.last_error.startswith("CI failed (exit 2)")
    assert "broken" not in project.origin_log()  # the agent's own commit never reached origin
    ws = Path(worker.workspace_path)
    assert "No such file or directory" in (ws / ".ralph-saw-config").read_text()
    assert_nothing_unverified_landed(project, task)
    assert not out.exists()  # and it could write nowhere outside its workspace


def test_writes_to_the_control_checkout_and_the_remote_fail(project: Project, tmp_path: Path) -> None:
    control, origin = project.control, project.origin
    canary = tmp_path / "payload-ran"
    script = (
        "printf '[ci]\\ncommand = [\"true\"]\\n' > " + f"{control}/.ralph/config.toml 2>/dev/null\n"
        f"printf '#!/bin/sh\\ntouch {canary}\\n' > {control}/.git/hooks/pre-push 2>/dev/null\n"
        f"chmod +x {control}/.git/hooks/pre-push 2>/dev/null\n"
        f"printf '#!/bin/sh\\ntouch {canary}\\n' > {origin}/hooks/pre-receive 2>/dev/null\n"
        f"chmod +x {origin}/hooks/pre-receive 2>/dev/null\n"
        f"echo x >> {control}/README.md 2>/dev/null\n"
        # root in the box's namespace tries to take a cover off; every capability is dropped
        f"umount {control} 2>/dev/null; cat {control}/.git/config > leaked.txt 2>/dev/null\n" + BROKEN
    )
    task, state = attack(project, tmp_path, script)
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.FAILED  # its broken work failed the gate
    assert_nothing_unverified_landed(project, task)
    assert not canary.exists()
    # A second task still runs under the real config: the gate still refuses FIXME.
    ws = Path(worker.workspace_path)
    assert not (ws / "leaked.txt").exists() or (ws / "leaked.txt").read_text() == ""


def test_hooks_and_config_planted_in_the_clone_never_run_outside_the_box(
    project: Project, tmp_path: Path
) -> None:
    canary = tmp_path / "hook-ran"
    payload = f"#!/bin/sh\\ntouch {canary}\\n"
    hooks = ("pre-commit", "post-commit", "post-checkout", "pre-push", "reference-transaction", "fsmonitor")
    script = "".join(f"printf '{payload}' > .git/hooks/{h}; chmod +x .git/hooks/{h}\n" for h in hooks) + (
        "git config core.fsmonitor .git/hooks/fsmonitor\n"
        "git config core.hooksPath .git/hooks\n"
        f"git config filter.x.clean 'touch {canary}; cat'\n"
        "echo '* filter=x' > .git/info/attributes\n"
        "echo honest work > work.txt\n"  # uncommitted: ralph commits it, with its own git directory
    )
    project.configure(agent={"max_remediations": 0})
    task, state = attack(project, tmp_path, script)
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.COMPLETED, worker
    assert not canary.exists()
    assert git(project.origin, "show", f"{BASE}:work.txt") == "honest work"


# --- the CI gate judges exactly the committed tree --------------------------------------------------


def test_the_skip_worktree_trick_does_not_pass_the_gate(project: Project, tmp_path: Path, mode: str) -> None:
    """The commit holds FIXME; the agent's work tree shows a clean file behind a skip-worktree bit."""
    script = (
        BROKEN
        + "git add broken.txt && git commit -qm broken\n"
        + "git update-index --skip-worktree broken.txt\n"
        + "echo 'value = fine' > broken.txt\n"
    )
    task, state = attack(project, tmp_path, script)
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.FAILED
    assert worker.last_error is not None and worker.last_error.startswith("CI failed (exit 2)")
    assert "left in broken.txt" in (project.paths.run_dir(task) / "ci.log").read_text()
    assert_nothing_unverified_landed(project, task)


def test_a_smudge_filter_does_not_pass_the_gate(project: Project, tmp_path: Path, mode: str) -> None:
    """A committed .gitattributes names a filter only the agent's clone defines: the gate's checkout
    runs no driver, so it sees the bytes that would land."""
    script = (
        BROKEN
        + "echo 'broken.txt filter=hide' > .gitattributes\n"
        + 'git config filter.hide.smudge "sed s/FIX'
        'ME/fine/"\n' + "git config filter.hide.clean cat\n" + "git add -A && git commit -qm broken\n"
    )
    task, state = attack(project, tmp_path, script)
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.FAILED
    assert worker.last_error is not None and worker.last_error.startswith("CI failed (exit 2)")
    assert_nothing_unverified_landed(project, task)


def test_core_worktree_does_not_send_any_checkout_outside(project: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = BROKEN + "git add -A && git commit -qm broken\n" + f"git config core.worktree {elsewhere}\n"
    task, state = attack(project, tmp_path, script)
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.FAILED
    assert list(elsewhere.iterdir()) == []
    assert_nothing_unverified_landed(project, task)


# --- processes -----------------------------------------------------------------------------------------


def test_a_setsid_escapee_and_a_double_fork_die_with_the_job(project: Project, tmp_path: Path) -> None:
    marker = f"ralph-escapee-{tmp_path.name}"
    sleeper = "import sys, time; time.sleep(600)"
    script = (
        f"setsid python3 -c '{sleeper}' {marker}-a </dev/null >/dev/null 2>&1 &\n"
        f"( python3 -c '{sleeper}' {marker}-b </dev/null >/dev/null 2>&1 & )\n"
        "sleep 2\n"
        "echo work > work.txt\n"
    )
    project.configure(agent={"command": hostile(tmp_path, script)})
    task = project.add("Do the task")
    project.tick()
    wait_until(lambda: bool(pids_with(f"{marker}-a")) and bool(pids_with(f"{marker}-b")), timeout=20)
    project.wait_for_jobs()
    wait_until(
        lambda: not pids_with(f"{marker}-a") and not pids_with(f"{marker}-b"),
        timeout=10,
        message="a process the agent detached outlived its job",
    )
    state = project.run_until(settled(task))
    assert state.worker(task).lifecycle is Lifecycle.COMPLETED  # type: ignore[union-attr]


# --- what ralph reads from a workspace ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        ("mkfifo {file}", "not a regular file"),
        ("ln -s {secret} {file}", "not a regular file"),
        ("ln -s /dev/zero {file}", "not a regular file"),
        ("head -c 300000 /dev/zero | tr '\\0' ' ' > {file}", "over the 262144-byte limit"),
    ],
)
def test_a_hostile_follow_up_proposal_blocks_the_landing_and_never_hangs(
    project: Project, tmp_path: Path, make: str, reason: str, mode: str
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-BYTES\n")
    file = ".ralph/cache/followups/$RALPH_TASK_ID.json"
    script = (
        "mkdir -p .ralph/cache/followups\n"
        + make.format(file=file, secret=secret)
        + "\necho work > work.txt\n"
    )
    task, state = attack(project, tmp_path, script)
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.BLOCKED_PUSH
    assert worker.last_error is not None and reason in worker.last_error
    everything = project.paths.state.read_text() + project.paths.events.read_text()
    marker = markers.read_blocked_push(Path(worker.workspace_path))
    assert marker is not None
    assert "TOP-SECRET" not in everything + marker.reason
    assert_nothing_unverified_landed(project, task)


def test_too_many_proposed_tasks_block_the_landing(project: Project, tmp_path: Path, mode: str) -> None:
    tasks = ",".join(f'{{"key": "k{n}", "title": "t{n}"}}' for n in range(5000))
    script = (
        "mkdir -p .ralph/cache/followups\n"
        f'echo \'{{"version": 1, "source_task_id": "\'$RALPH_TASK_ID\'", "tasks": [{tasks}]}}\''
        " > .ralph/cache/followups/$RALPH_TASK_ID.json\n"
        "echo work > work.txt\n"
    )
    task, state = attack(project, tmp_path, script)
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.BLOCKED_PUSH
    assert worker.last_error is not None and "5000 tasks proposed; at most 20 at once" in worker.last_error
    assert len(project.origin_tasks("queue")) == 1  # only the task itself, still there


# --- what may land ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ('echo \'{"version": 1, "tasks": []}\' > .ralph/queue.jsonc', ".ralph/queue.jsonc"),
        ("printf '[ci]\\ncommand = [\"true\"]\\n' > .ralph/config.toml", ".ralph/config.toml"),
        ("echo 'import sys; sys.exit(0)' > .ci-check.py", ".ci-check.py"),
    ],
)
def test_a_change_to_ralphs_files_or_the_gate_is_blocked_with_the_paths(
    project: Project, tmp_path: Path, change: str, named: str, mode: str
) -> None:
    task, state = attack(project, tmp_path, change + "\n")
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.BLOCKED_PUSH
    assert worker.last_error is not None and f"it changes protected paths: {named}" in worker.last_error
    marker = markers.read_blocked_push(Path(worker.workspace_path))
    assert marker is not None and named in marker.reason
    assert f"{task}: Do the task" not in project.origin_log()
    # The queue still works: a second, honest task lands.
    project.configure(agent={"command": hostile(tmp_path, "echo fine > fine.txt\n")})
    other = project.add("Honest")
    state = project.run_until(settled(other))
    assert state.worker(other).lifecycle is Lifecycle.COMPLETED  # type: ignore[union-attr]


def test_protected_and_allowed_globs_and_the_makefile_of_a_make_gate(
    project: Project, tmp_path: Path, mode: str
) -> None:
    (project.control / "Makefile").write_text("ci:\n\t" + sys.executable + " .ci-check.py\n")
    project.commit_and_push("a Makefile")
    project.configure(
        ci={"command": ["make", "ci"]},
        landing={"protected_paths": ["deploy/*", ".github/workflows/"], "allow_paths": ["deploy/notes.md"]},
    )
    script = (
        "echo x >> Makefile\nmkdir -p deploy .github/workflows\n"
        "echo a > deploy/prod.yml\necho b > deploy/notes.md\necho c > .github/workflows/ci.yml\n"
    )
    task, state = attack(project, tmp_path, script)
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.BLOCKED_PUSH
    assert worker.last_error is not None
    assert (
        "it changes protected paths: .github/workflows/ci.yml, Makefile, deploy/prod.yml" in worker.last_error
    )


def test_big_files_escaping_symlinks_and_unsafe_submodules_are_refused(
    project: Project, tmp_path: Path, mode: str
) -> None:
    project.configure(landing={"max_file_bytes": 1000})
    script = (
        "head -c 2000 /dev/zero > big.bin\n"
        "ln -s ../../../etc/passwd escape\n"
        "ln -s inside.txt fine-link\necho ok > inside.txt\n"
        "printf '[submodule \"x\"]\\n\\tpath = x\\n\\turl = ext::sh -c id\\n' > .gitmodules\n"
    )
    task, state = attack(project, tmp_path, script)
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.BLOCKED_PUSH
    reason = worker.last_error or ""
    assert "files over landing.max_file_bytes (1000 bytes): big.bin" in reason
    assert "symlinks pointing outside the repository: escape" in reason
    assert "fine-link" not in reason
    assert "submodule URLs that run a command or read this machine's disk: ext::sh" in reason


# --- ralph's own files ----------------------------------------------------------------------------------


def test_ralph_keeps_its_files_to_its_owner(project: Project, tmp_path: Path, mode: str) -> None:
    """Through `python -m ralph run`, as cron starts it: umask 077 for everything ralph makes."""
    project.configure(agent={"command": hostile(tmp_path, "echo work > work.txt\n")})
    old = os.umask(0o000)  # the worst a crontab could hand ralph
    try:
        project.add("Do the task")
        result = project.tick_process()
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    project.wait_for_jobs()
    made = [
        project.paths.parallel,
        *project.paths.parallel.rglob("*"),
        *project.paths.workspace_root.rglob("*"),
    ]
    loose = [str(p) for p in made if not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert loose == []


# --- what a job is given ----------------------------------------------------------------------------------


def test_the_gate_gets_the_env_files_a_workspace_gets(project: Project, tmp_path: Path) -> None:
    """A gate that needs the ignored .env (a test database URL, say) passes in ralph's own checkout."""
    (project.control / ".gitignore").write_text(".ralph/cache/\n.ralph/workspaces/\n.env\n")
    (project.control / ".env").write_text("DATABASE_URL=sqlite://\n")
    (project.control / ".ci-check.py").write_text(
        "import sys\nsys.exit(0 if open('.env').read() == 'DATABASE_URL=sqlite://\\n' else 3)\n"
    )
    project.commit_and_push("a gate that reads .env")
    task, state = attack(project, tmp_path, "echo work > work.txt\n")
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.COMPLETED, worker.last_error
    assert ".env" not in git(project.origin, "ls-tree", "-r", "--name-only", BASE).split()


@contextmanager
def loopback_server() -> Iterator[tuple[str, list[str]]]:
    """A server on 127.0.0.1: its address, and the paths it was asked for."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("network", [True, False])
def test_sandbox_agent_network_cuts_the_agents_network(
    project: Project, tmp_path: Path, network: bool
) -> None:
    """A server on 127.0.0.1 that the agent tries to reach: reachable only while the config allows."""
    with loopback_server() as (address, seen):
        url = f"{address}/from-the-agent"
        fetch = f"python3 -c \"import urllib.request; urllib.request.urlopen('{url}', timeout=5)\"\n"
        project.configure(sandbox={"agent_network": network})
        attack(project, tmp_path, fetch + "echo work > work.txt\n")
    assert seen == (["/from-the-agent"] if network else [])


# --- the box itself: no box, no tick; the gate's network; a resolution that keeps its markers --------


def test_a_tick_refuses_to_run_when_the_box_cannot_start(project: Project, tmp_path: Path) -> None:
    """As on a host with unprivileged user namespaces off: no job starts unboxed, and the error says how
    to install the box and how to opt out."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bwrap = bin_dir / "bwrap"
    bwrap.write_text(
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'bubblewrap 0.8.0'; exit 0; }\n"
        "echo 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n"
    )
    bwrap.chmod(0o755)
    task = project.add("Do the task")
    done = project.tick_process(env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.returncode == 1, done.stderr
    assert (
        "sandbox: bwrap cannot start a box here (bwrap: setting up uid map: Permission denied)" in done.stderr
    )
    assert 'set sandbox.mode = "none" in .ralph/config.toml' in done.stderr
    assert "Traceback" not in done.stderr
    assert not project.paths.state.exists() or project.state().worker(task) is None  # nothing started


@pytest.mark.parametrize("network", [True, False])
def test_sandbox_gate_network_cuts_the_gates_network(project: Project, tmp_path: Path, network: bool) -> None:
    """The gate tries a server on 127.0.0.1 before its check: it gets through only while allowed."""
    with loopback_server() as (address, seen):
        url = f"{address}/from-the-gate"
        reach = (
            "import urllib.request\ntry:\n"
            f"    urllib.request.urlopen({url!r}, timeout=5)\n"
            "except OSError:\n    pass\n"
        )
        gate = [sys.executable, "-c", reach + "import runpy; runpy.run_path('.ci-check.py')"]
        project.configure(ci={"command": gate}, sandbox={"gate_network": network})
        task = project.add("Do the task", description="scripted-agent: write work.txt done")
        state = project.run_until(settled(task), timeout=90)
    worker = state.worker(task)
    assert worker is not None and worker.lifecycle is Lifecycle.COMPLETED, worker
    assert project.origin_file("work.txt") == "done"
    assert seen == (["/from-the-gate"] if network else [])


def test_a_conflict_resolution_that_leaves_its_markers_never_lands(origin: Path, control: Path) -> None:
    """The agent edits the conflicted file but keeps git's markers: ralph checks, and fails it."""
    project = make_project(origin, control, agent={"max_attempts": 1, "max_remediations": 1})
    (project.control / "shared.txt").write_text("value = 0\n")
    project.commit_and_push("a shared file")
    keep_markers = "scripted-agent: conflict: append shared.txt resolved, but the markers stay"
    for side in ("A", "B"):
        project.add(
            f"Set {side}", description=f"scripted-agent: write shared.txt value = {side}\n{keep_markers}"
        )
    state = project.run_until(
        lambda s: len(s.workers) == 2 and all(w.lifecycle in Lifecycle.terminal() for w in s.workers),
        workers=2,
        timeout=120,
    )
    loser = next(w for w in state.workers if w.lifecycle is not Lifecycle.COMPLETED)
    assert loser.remediations == 1
    assert loser.last_error is not None
    assert "conflict markers are left in shared.txt after the remediation" in loser.last_error
    on_origin = project.origin_file("shared.txt")
    assert on_origin in ("value = A", "value = B")  # the winner alone; no marker line ever landed
    assert not any(line.startswith(("<<<<<<<", "=======", ">>>>>>>")) for line in on_origin.splitlines())
