"""Shared by every benchmark: a hermetic git environment, sandboxes, projects, timing and the table.

Projects are built with plain git and ralph's documented file formats (config.toml, queue.json,
done.json: README "Files"), not with ralph's internals, so a benchmark measures ralph as a user
meets it. ralph itself is run the way cron runs it: `python -m ralph -C <control> run --allow-root`
in a process of its own, so interpreter start-up and imports count.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCRIPTED_AGENT = REPO / "contrib" / "agents" / "scripted-agent"
PYTHON = sys.executable
BASE = "main"
SEED = 20261121
STAMP = "2026-01-01T00:00:00Z"  # created_at/updated_at of generated tasks

# The sandbox's git: no user or system config, fixed identity, no prompts (as the test suite does).
_HOME: Path | None = None


def hermetic() -> None:
    """Isolate git (and ralph) from this machine's configuration; idempotent."""
    global _HOME
    if _HOME is not None:
        return
    _HOME = Path(tempfile.mkdtemp(prefix="ralph-bench-home-"))
    atexit.register(cleanup_home)
    (_HOME / ".gitconfig").write_text(
        "[init]\n\tdefaultBranch = main\n[user]\n\tname = Bench\n\temail = bench@example.com\n"
        "[commit]\n\tgpgsign = false\n[advice]\n\tdetachedHead = false\n[gc]\n\tauto = 0\n"
    )
    env = {
        "HOME": str(_HOME),
        "XDG_CONFIG_HOME": str(_HOME / ".config"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "Bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_EDITOR": "true",
        # Compiled modules are cached, as on any machine where the install is writable, but outside
        # the source tree: an editable install would otherwise write ralph/__pycache__.
        "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "ralph-bench-pycache"),
    }
    os.environ.update(env)
    for key in list(os.environ):
        if key.startswith("RALPH_") or key in (
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "PYTHONPATH",
            "PYTHONDONTWRITEBYTECODE",
        ):
            del os.environ[key]


def cleanup_home() -> None:
    global _HOME
    if _HOME is not None:
        shutil.rmtree(_HOME, ignore_errors=True)
        _HOME = None


def git(cwd: Path, *args: str, input: bytes | None = None, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode(errors="replace").rstrip("\n")


@contextlib.contextmanager
def sandbox(name: str) -> Iterator[Path]:
    """A temporary directory, removed afterwards even when the benchmark fails."""
    hermetic()
    root = Path(tempfile.mkdtemp(prefix=f"ralph-bench-{name}-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- projects ---------------------------------------------------------------------------------------


def task(
    n: int,
    *,
    width: int = 4,
    title: str | None = None,
    status: str = "todo",
    depends_on: Sequence[int] = (),
    description: str | None = None,
    scheduled_start: str | None = None,
    completed_at: str | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": task_id(n, width),
        "status": status,
        "title": title or f"Task {n}",
        "priority": "medium",
        "created_at": STAMP,
        "updated_at": STAMP,
    }
    if description:
        doc["description"] = description
    if depends_on:
        doc["depends_on"] = [task_id(d, width) for d in depends_on]
    if scheduled_start:
        doc["scheduled_start"] = scheduled_start
    if completed_at:
        doc["completed_at"] = completed_at
    return doc


def task_id(n: int, width: int = 4) -> str:
    return f"RQ-{n:0{width}d}"


def queue_json(tasks: Sequence[dict[str, Any]]) -> str:
    return json.dumps({"version": 1, "tasks": list(tasks)}, indent=2) + "\n"


def _toml_list(values: Sequence[Any]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def config_toml(
    *,
    agent_command: Sequence[str] | None = None,
    ci_command: Sequence[str] = (),
    workers: int = 3,
    id_width: int = 4,
    push_backoff_ms: Sequence[int] = (500, 2000, 5000, 10000),
    max_push_attempts: int = 50,
    max_parallel: int | None = None,
    max_rebuilds: int | None = None,
    follow_jobs: bool = False,
) -> str:
    """The config a benchmark project uses (README "Configuration"); keys not named keep their default.

    Jobs run in ralph's default box (`sandbox.mode = "bwrap"`), as they would for a user. The benchmarks
    that tick until done start every tick themselves, so a job does not ask for one (`run.follow_jobs`)
    unless `follow_jobs`: end to end measures exactly that.
    """
    agent = list(agent_command or [str(SCRIPTED_AGENT), "{prompt_file}"])
    ci = f"[ci]\ncommand = {_toml_list(list(ci_command))}\ntimeout_minutes = 5\n"
    if max_parallel is not None:
        ci += f"max_parallel = {max_parallel}\n"
    landing = f"\n[landing]\nmax_rebuilds = {max_rebuilds}\n" if max_rebuilds is not None else ""
    return (
        f'[git]\nremote = "origin"\nbase_branch = "{BASE}"\n\n'
        f"[parallel]\nworkers = {workers}\nkill_grace_seconds = 1\n"
        f"push_backoff_ms = {_toml_list(push_backoff_ms)}\nmax_push_attempts = {max_push_attempts}\n\n"
        f'[agent]\nrunner = "command"\ncommand = {_toml_list(agent)}\ntimeout_minutes = 5\n'
        "retry_backoff_minutes = [0]\n\n"
        f"{ci}{landing}\n"
        f'[queue]\nid_prefix = "RQ"\nid_width = {id_width}\n\n'
        f"[run]\nfollow_jobs = {'true' if follow_jobs else 'false'}\n"
    )


@dataclass
class Project:
    root: Path
    origin: Path
    control: Path

    @property
    def cache(self) -> Path:
        return self.control / ".ralph" / "cache" / "parallel"

    @property
    def stamp(self) -> Path:
        """The idle stamp (ralph.stamp): while it holds, a tick exits after one `git ls-remote`."""
        return self.cache / "idle.json"

    def clear_stamp(self) -> None:
        """Make the next tick a full one (it writes the stamp again if it finds nothing to do)."""
        self.stamp.unlink(missing_ok=True)

    def run_dir(self, task_id: str) -> Path:
        return self.cache / "runs" / task_id

    def ring(self) -> list[dict[str, Any]]:
        """The tick-health ring (`ticks.json`): how the last 50 `ralph run`s ended, whoever started them."""
        path = self.cache / "ticks.json"
        try:
            ticks: list[dict[str, Any]] = json.loads(path.read_text())["ticks"]
        except (OSError, ValueError, KeyError):
            return []
        return ticks

    @property
    def state_path(self) -> Path:
        return self.cache / "state.json"

    def state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {"workers": []}
        doc: dict[str, Any] = json.loads(self.state_path.read_text())
        return doc

    def workers(self) -> list[dict[str, Any]]:
        workers: list[dict[str, Any]] = self.state()["workers"]
        return workers

    def lifecycles(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for w in self.workers():
            counts[w["lifecycle"]] = counts.get(w["lifecycle"], 0) + 1
        return counts

    def events(self) -> list[dict[str, Any]]:
        path = self.cache / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def tick(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`python -m ralph -C <control> run --allow-root ARGS`, as cron runs it."""
        done = subprocess.run(
            [PYTHON, "-m", "ralph", "-C", str(self.control), "run", "--allow-root", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"ralph run exited {done.returncode}: {done.stderr.strip()}")
        return done

    def ralph(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [PYTHON, "-m", "ralph", "-C", str(self.control), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ralph {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def wait_for_jobs(self, timeout: float = 120) -> None:
        """Until every job the state records has written its result (so nothing runs in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [
                w["task_id"]
                for w in self.workers()
                if w["lifecycle"] in ("running", "checking", "remediating")
                and w.get("job")
                and not Path(w["job"]["result_path"]).exists()
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs still running after {timeout}s: {pending}")
            time.sleep(0.01)

    def origin_subjects(self) -> list[str]:
        return git(self.origin, "log", "--format=%s", BASE).splitlines()


def make_project(
    root: Path,
    *,
    tasks: Sequence[dict[str, Any]] = (),
    done: Sequence[dict[str, Any]] = (),
    config: str | None = None,
    files: dict[str, str] | None = None,
    origin: Path | None = None,
) -> Project:
    """A bare origin and a control clone with .ralph/ committed (tracked queue) and pushed.

    With `origin`, that (already populated) bare repository is used and the ralph files are committed
    on top of its base branch.
    """
    hermetic()
    if origin is None:
        origin = root / "origin.git"
        git(root, "init", "-q", "--bare", "-b", BASE, str(origin))
    control = root / "control"
    git(root, "clone", "-q", str(origin), str(control))
    git(control, "checkout", "-q", "-B", BASE)
    ralph_dir = control / ".ralph"
    ralph_dir.mkdir(exist_ok=True)
    (ralph_dir / "config.toml").write_text(config or config_toml())
    (ralph_dir / "queue.json").write_text(queue_json(tasks))
    (ralph_dir / "done.json").write_text(queue_json(done))
    (control / ".gitignore").write_text(".ralph/cache/\n.ralph/workspaces/\n")
    if not (control / "README.md").exists():
        (control / "README.md").write_text("# a benchmark project\n")
    for rel, text in (files or {}).items():
        (control / rel).parent.mkdir(parents=True, exist_ok=True)
        (control / rel).write_text(text)
    git(control, "add", "-A")
    git(control, "commit", "-q", "-m", "Set up ralph")
    git(control, "push", "-q", "origin", f"HEAD:{BASE}")
    git(control, "fetch", "-q", "origin")
    git(control, "remote", "set-head", "origin", BASE)
    return Project(root=root, origin=origin, control=control)


def now_z() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- timing -----------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Figure:
    """Several runs of one measurement, in seconds."""

    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)

    def show(self) -> str:
        return f"{fmt_s(self.median)} [{fmt_s(self.low)}-{fmt_s(self.high)}]"


def fmt_s(seconds: float) -> str:
    if seconds != seconds:  # NaN: the run failed
        return "failed"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


@dataclass
class Row:
    """One line of the table: ralph's figure, the floor's, and their ratio (medians)."""

    benchmark: str
    ralph: Figure
    floor: Figure | None = None
    floor_label: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.floor is None or self.floor.median <= 0 or self.ralph.median != self.ralph.median:
            return None
        return self.ralph.median / self.floor.median


def print_table(rows: Sequence[Row], *, file: Any = None) -> None:
    out = file or sys.stdout
    headers = ("benchmark", "ralph median [min-max]", "floor", "floor median [min-max]", "ratio", "runs")
    lines = [
        (
            r.benchmark,
            r.ralph.show(),
            r.floor_label or "-",
            r.floor.show() if r.floor else "-",
            f"{r.ratio:.1f}x" if r.ratio is not None else "-",
            str(len(r.ralph.runs)),
        )
        for r in rows
    ]
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(headers)
    ]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |", file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for line in lines:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |", file=out)
    notes = [(r.benchmark, r.notes) for r in rows if r.notes]
    for name, note in notes:
        print(f"  {name}: {note}", file=out)
    out.flush()


def heading(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def runs_from_argv(default: int, minimum: int = 5) -> int:
    """`--runs N` on a benchmark's command line (at least `minimum`: 5 for a meaningful median; the
    benchmarks that take minutes a run accept fewer)."""
    if "--runs" in sys.argv:
        return max(minimum, int(sys.argv[sys.argv.index("--runs") + 1]))
    return default


def machine() -> dict[str, str]:
    """What the figures were taken on."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "git": git(Path.cwd(), "--version").removeprefix("git version "),
        "ralph": ralph_version(),
    }


def ralph_version() -> str:
    """The commit of the ralph measured, and whether its files differ from it."""
    head = git(REPO, "rev-parse", "--short", "HEAD", check=False) or "unknown"
    dirty = git(REPO, "status", "--porcelain", "--", "ralph", "pyproject.toml", check=False)
    return head + (" with uncommitted changes to ralph/" if dirty else "")


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of `values`, by linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- counting git commands ----------------------------------------------------------------------------


@contextlib.contextmanager
def logging_git(directory: Path) -> Iterator[Path]:
    """A `git` that logs its argv (one line per command) and runs the real one, first on PATH while the
    block runs; yields the log. Jobs started meanwhile inherit PATH, so their set-up (a job's checkout)
    is counted too, marked as a job's; a command run inside a job's box cannot write the log, and is
    not counted."""
    real = shutil.which("git")
    assert real is not None, "git is not on PATH"
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "git.log"
    shim = directory / "git"
    shim.write_text(
        "#!/bin/sh\n"
        "case \"$(tr '\\0' ' ' < /proc/$PPID/cmdline 2>/dev/null)\" in\n"
        "  *ralph.job*) who=job ;;\n"
        "  *) who=ralph ;;\n"
        "esac\n"
        f'printf "%s %s\\n" "$who" "$*" >> "{log}" 2>/dev/null\n'
        f'exec "{real}" "$@"\n'
    )
    shim.chmod(0o755)
    before = os.environ["PATH"]
    os.environ["PATH"] = f"{directory}:{before}"
    try:
        yield log
    finally:
        os.environ["PATH"] = before


def git_log(log: Path, who: str | None = None) -> list[str]:
    """The logged git commands (argv after `git`); `who` = "ralph" or "job" keeps only those."""
    lines = log.read_text().splitlines() if log.exists() else []
    out = []
    for line in lines:
        by, _, argv = line.partition(" ")
        if who is None or by == who:
            out.append(argv)
    return out


def git_kind(call: str) -> str:
    """`worktree add`, `update-ref`, ...: the subcommand of a logged git command line, without `-c` pairs
    and `-C DIR`."""
    words = call.split()
    while len(words) >= 2 and words[0] in ("-c", "-C"):
        words = words[2:]
    if not words:
        return "(none)"
    if words[0] in ("worktree", "remote", "cat-file", "rev-parse") and len(words) > 1:
        return f"{words[0]} {words[1]}"
    return words[0]


def git_kinds(calls: Sequence[str]) -> str:
    """`12 x cat-file --batch, 3 x fetch, ...`, most frequent first."""
    counts: dict[str, int] = {}
    for call in calls:
        kind = git_kind(call)
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} x {kind}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# --- a loaded machine -----------------------------------------------------------------------------------


@contextlib.contextmanager
def loaded_machine(loops: int | None = None) -> Iterator[list[int]]:
    """Busy loops on every core (one process each, at normal priority) while the block runs; yields
    their pids. They are ended, by pid, however the block ends."""
    count = loops or len(os.sched_getaffinity(0))
    procs = [
        subprocess.Popen([PYTHON, "-c", "while True: pass"], stdin=subprocess.DEVNULL) for _ in range(count)
    ]
    try:
        time.sleep(0.5)  # let the scheduler see them as the CPU hogs they are
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
