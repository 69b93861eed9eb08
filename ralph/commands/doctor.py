"""`ralph doctor [--json] [--cron]`: can unattended ticks run here, and if not, what to do about it.

Every check says what it found and, when something is wrong, how to fix it. A failure is something
that makes ticks refuse to run or lose work; a warning is something that will bite later (usually
under cron or systemd rather than in your shell). Run it as the user that cron or systemd runs ralph
as; `--cron` looks programs up on the PATH cron gives (/usr/bin:/bin) instead of yours.

Doctor only looks. It never fetches (it asks the remote with `git ls-remote`), never takes the tick
lock, never writes or quarantines a file (state.json is read with under_lock=False), so it is safe to
run while ticks run, and changes nothing if it crashes halfway. The one exception is the claims check:
to know that the remote keeps claims it pushes a throwaway ref, refs/ralph/doctor/<host>, and deletes
it (both leased; it points at the base's tip, so no object is written on either side; one left
behind by a crash is replaced and deleted by the next run).

This module is the list of checks and what they say. What they read lives with its noun: unit files
in ralph.systemd, /proc/locks in ralph.proc, the mount table in ralph.files, PATH lookups in
ralph.programs, makefiles in ralph.makefile, the box in ralph.sandbox, a CLI's version and credentials
in ralph.runners, the Rust ralph's files in ralph.rust_config and ralph.ownership.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import click

from ralph import files, health, makefile, ownership, proc, runners, rust_config, sandbox, systemd
from ralph import job as jobs
from ralph.bookkeeping import Mode, detect_source, read_queues
from ralph.checkout import Checkout
from ralph.claims import host_id, probe
from ralph.clock import format_z
from ralph.clock import now as read_clock
from ralph.commands._output import duration, emit_json, one_line
from ralph.config import Config, ParallelConfig, load_config
from ralph.errors import ExitCode, GitError, PreflightError, QueueError, RalphError
from ralph.git import Git, find_repository, parse_git_version
from ralph.nesting import loads_json
from ralph.paths import Paths
from ralph.pause import read_pause
from ralph.preflight import check_identity, check_workspace_root
from ralph.programs import CRON_PATH, fragile_reason, interpreter, lookup
from ralph.queues import Queues, load_local_queues
from ralph.state import SCHEMA_VERSION, Lifecycle, State, Worker, load_state, short_time
from ralph.text import printable

Level = Literal["ok", "warning", "fail"]

# The oldest git that runs everything ralph runs: `rev-parse --path-format=absolute` (workspace.py,
# new in 2.31) needs it; `fetch --no-write-fetch-head` and `init --object-format` (2.29) and
# `init --initial-branch` (2.28, the demo) come with it. The lease syntax
# `--force-with-lease=<ref>:<expect>`, `worktree add/remove`, `check-ignore` and `update-ref --stdin`
# are all far older.
MIN_GIT: Final = (2, 31)
MIN_GIT_WHY: Final = (
    "ralph runs `git rev-parse --path-format=absolute` (git 2.31) when it creates a workspace, and "
    "`git fetch --no-write-fetch-head` (2.29) when it saves work to the attic"
)

# Long enough for a slow server, short enough that a hung connection does not hang doctor.
LS_REMOTE_TIMEOUT_S: Final = 20.0

# A tick takes about parallel.tick_budget_s (45 s by default) plus a few bounded git calls; one that
# has held the lock this long is stuck, and every tick after it exits 75 without doing anything.
LONG_HELD_LOCK: Final = timedelta(minutes=15)

# Lifecycles whose worker still needs its workspace: active ones work in it, integrating lands from
# it, blocked_push keeps it for `ralph retry`.
_NEEDS_WORKSPACE: Final = frozenset(
    {
        Lifecycle.RUNNING,
        Lifecycle.CHECKING,
        Lifecycle.REMEDIATING,
        Lifecycle.INTEGRATING,
        Lifecycle.BLOCKED_PUSH,
    }
)

_SEVERITY: Final[dict[Level, int]] = {"ok": 0, "warning": 1, "fail": 2}
_TAGS: Final[dict[Level, str]] = {"ok": "ok", "warning": "warn", "fail": "FAIL"}


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str  # starts with its subject, so the line reads on its own: "git 2.39.5 (>= 2.31)"
    fix: str | None = None

    @property
    def ok(self) -> bool:
        """True unless it failed: a warning does not make doctor (or a tick) fail."""
        return self.level != "fail"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "level": self.level, "detail": self.detail, "fix": self.fix}

    def line(self) -> str:
        """One line; a detail may quote a file, a lock's holder or an error: escaped, never obeyed."""
        fix = f" — fix: {self.fix}" if self.fix and self.level != "ok" else ""
        return printable(f"{_TAGS[self.level]:<6}{self.detail}{fix}")


def doctor(*, start: Path, as_json: bool, cron: bool, allow_root: bool = False) -> ExitCode:
    checks = run_checks(start, cron=cron, allow_root=allow_root)
    ok = all(c.ok for c in checks)
    if as_json:
        emit_json({"ok": ok, "checks": [c.as_dict() for c in checks]})
    else:
        # Failing ticks are the first thing to read: their error usually names what the other lines check.
        first = [c for c in checks if c.name == "ticks" and c.level != "ok"]
        rest = [c for c in checks if c not in first]
        click.echo("\n".join([*(c.line() for c in [*first, *rest]), summary(checks)]))
    return ExitCode.OK if ok else ExitCode.ERROR


def summary(checks: Sequence[Check]) -> str:
    counts = {level: sum(1 for c in checks if c.level == level) for level in _SEVERITY}
    warnings = f"{counts['warning']} warning" + ("" if counts["warning"] == 1 else "s")
    if counts["fail"]:
        failed = f"{counts['fail']} failed"
        return f"doctor: {counts['ok']} ok, {warnings}, {failed}: fix the FAIL lines first"
    if counts["warning"]:
        return f"doctor: {counts['ok']} ok, {warnings}: ticks can run; read the warn lines"
    return f"doctor: all {counts['ok']} checks ok"


# --- running the checks ----------------------------------------------------------------------------


@dataclass
class _Context:
    """What the checks share; each check fills in what later ones need, or leaves it None."""

    start: Path
    cron: bool
    allow_root: bool
    now: datetime
    root: Path | None = None
    git: Git | None = None
    config: Config | None = None
    config_problem: str | None = None
    paths: Paths | None = None
    base: str | None = None
    base_problem: str | None = None
    state: State | None = None
    state_problem: str | None = None

    @property
    def path_env(self) -> str:
        """The PATH a tick would look programs up on."""
        return CRON_PATH if self.cron else os.environ.get("PATH", os.defpath)


class _NotChecked(Exception):
    """A check that cannot run because something it depends on failed (that failure is reported)."""


def run_checks(start: Path, *, cron: bool, allow_root: bool, now: datetime | None = None) -> list[Check]:
    ctx = _Context(start=start, cron=cron, allow_root=allow_root, now=now or read_clock())
    checks = [_guard(name, check, ctx) for name, check in _MACHINE_CHECKS]
    if ctx.root is None:
        return checks  # everything else is about a checkout
    for name, check in _CHECKOUT_CHECKS:
        checks.append(_guard(name, check, ctx))
    return checks


def _guard(name: str, check: Callable[[_Context], Check], ctx: _Context) -> Check:
    """One check; an error it did not expect (git failing, a file unreadable) is its own failure, so
    every other check still runs. A bug (anything but RalphError/OSError) is not hidden here."""
    try:
        return check(ctx)
    except _NotChecked as e:
        return Check(name, "warning", f"{name}: not checked: {e}", "fix the failure above first")
    except GitError as e:
        return Check(
            name, "fail", f"{name}: {e}", f"make sure git works in {ctx.root or ctx.start} as this user"
        )
    except RalphError as e:
        # ralph's messages read "what is wrong; what to do" (README: exit codes): split them that way.
        detail, _, fix = str(e).partition("; ")
        return Check(name, "fail", f"{name}: {detail}", fix or None)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return Check(name, "fail", f"{name}: {where}{e.strerror or e}", "check the file's permissions")


def _need_config(ctx: _Context) -> tuple[Config, Paths]:
    if ctx.config is None or ctx.paths is None:
        raise _NotChecked(ctx.config_problem or "the configuration could not be read")
    return ctx.config, ctx.paths


def _need_git(ctx: _Context) -> Git:
    if ctx.git is None:
        raise _NotChecked("git does not run")
    return ctx.git


def _need_base(ctx: _Context) -> str:
    _need_config(ctx)
    if ctx.base is None:
        raise _NotChecked(f"the base branch is unknown ({ctx.base_problem})")
    return ctx.base


def _need_state(ctx: _Context) -> State:
    if ctx.state is None:
        raise _NotChecked(f"state.json is unreadable ({ctx.state_problem or 'see above'})")
    return ctx.state


# --- git, user, repository, config ----------------------------------------------------------------


def _check_git(ctx: _Context) -> Check:
    minimum = ".".join(map(str, MIN_GIT))
    try:
        version_text = Git(ctx.start if ctx.start.is_dir() else Path("/")).run("--version", timeout=30).out
    except RalphError as e:
        return Check("git", "fail", f"git does not run: {e}", f"install git {minimum} or newer")
    version = parse_git_version(version_text)
    if version is None:
        return Check(
            "git", "warning", f"git: cannot read a version in {version_text!r}", f"make sure it is {minimum}+"
        )
    shown = ".".join(map(str, version))
    if version[:2] < MIN_GIT:
        return Check(
            "git",
            "fail",
            f"git {shown} is older than {minimum}: {MIN_GIT_WHY}",
            f"install git {minimum} or newer (your distribution's backports, or the git-core PPA)",
        )
    found = _locate("git", ctx.start, ctx, what="git", key=None)
    if found.level != "ok":
        return Check("git", found.level, f"git {shown}: {found.detail}", found.fix)
    return Check("git", "ok", f"git {shown} (>= {minimum}) at {found.path}")


def _check_user(ctx: _Context) -> Check:
    euid = os.geteuid()
    try:
        user = pwd.getpwuid(euid).pw_name
    except KeyError:
        user = f"uid {euid}"
    if euid != 0:
        return Check("user", "ok", f"running as {user} (uid {euid}), not root")
    if ctx.allow_root:
        return Check("user", "ok", "running as root, allowed by --allow-root")
    return Check(
        "user",
        "fail",
        "running as root: every agent and CI job would run as root too, free to change anything on this "
        "host, and the files ralph writes would belong to root",
        "run ralph as a dedicated unprivileged user (its own crontab, or User= in the systemd unit); "
        "--allow-root only inside a throwaway sandbox",
    )


def _check_repository(ctx: _Context) -> Check:
    ctx.root = find_repository(ctx.start)
    ctx.git = Git(ctx.root)
    return Check("repository", "ok", f"repository {ctx.root}")


def _check_config(ctx: _Context) -> Check:
    assert ctx.root is not None
    path = Paths.for_root(ctx.root).config
    # The state file and the lock do not move with the configuration: those checks still run.
    try:
        ctx.config = load_config(path)
    except RalphError as e:
        ctx.config_problem = f"{path.name} is invalid"
        return Check(
            "config",
            "fail",
            f"config invalid: {e}",
            f"edit {path} (README: 'Configuration' lists every key); ticks refuse to run until it loads",
        )
    # As a tick builds them (ralph.checkout.open_checkout): the queue files may live elsewhere.
    ctx.paths = Paths.for_root(
        ctx.root,
        ctx.config.parallel.workspace_root,
        queue_file=ctx.config.queue.file,
        done_file=ctx.config.queue.done_file,
    )
    checkout = Checkout(root=ctx.root, paths=ctx.paths, config=ctx.config)
    try:
        ctx.base = checkout.base_branch()
    except RalphError as e:
        ctx.base_problem = str(e)
    if not path.exists():
        rust = ctx.paths.rust_config
        if rust.exists():
            return Check(
                "config", "ok", f"config: no {path.name}; the Rust ralph's {ctx.paths.relative(rust)} is read"
            )
        return Check("config", "ok", f"config: no {ctx.paths.relative(path)}, so every default applies")
    return Check("config", "ok", f"config {ctx.paths.relative(path)} valid")


def _check_setup(ctx: _Context) -> Check:
    _, paths = _need_config(ctx)
    if not paths.is_initialised():
        return Check(
            "setup",
            "fail",
            f"setup: {paths.root} is not set up for ralph (no .ralph/config.toml, no config.jsonc, no queue "
            "file): ticks refuse to run",
            "run `ralph init` there, then commit and push what it creates",
        )
    return Check("setup", "ok", "setup: set up for ralph (a config or a queue file exists)")


def _check_rust_config(ctx: _Context) -> Check:
    """The Rust ralph's config.jsonc: keys with no meaning here, or a file nobody reads any more."""
    _, paths = _need_config(ctx)
    shadowed = rust_config.shadowed(paths.config)
    if shadowed is not None:
        return Check(
            "rust_config",
            "warning",
            f"rust_config: {paths.relative(shadowed)} is not read: {paths.relative(paths.config)} exists and "
            "wins, so an edit there changes nothing",
            f"move what you still need into {paths.relative(paths.config)}, then delete "
            f"{paths.relative(shadowed)}",
        )
    if not paths.rust_config.exists():
        return Check("rust_config", "ok", "rust_config: no Rust ralph config.jsonc")
    ignored = rust_config.unmapped(paths.rust_config)
    if ignored:
        return Check(
            "rust_config",
            "warning",
            f"rust_config: {paths.relative(paths.rust_config)} is read, but these keys mean nothing here and "
            f"are ignored: {', '.join(ignored)}",
            '`ralph init --from-rust` writes .ralph/config.toml from it (README "Coming from the Rust '
            'ralph")',
        )
    return Check(
        "rust_config", "ok", f"rust_config: every key of {paths.relative(paths.rust_config)} is read"
    )


def _check_rust_lock(ctx: _Context) -> Check:
    _, paths = _need_config(ctx)
    lock = ownership.inspect_rust_lock(paths)
    if lock is None:
        return Check("rust_lock", "ok", "rust_lock: no Rust ralph lock (.ralph/lock/)")
    if lock.state == "stale":
        return Check("rust_lock", "ok", f"rust_lock: {lock.describe()}, which is gone: stale, ignored")
    if lock.state == "live":
        return Check(
            "rust_lock",
            "warning",
            f"rust_lock: {lock.describe()}: ticks wait for it (each exits 75 and starts nothing)",
            "let that Rust ralph finish, or stop it, before switching to ralph",
        )
    return Check(
        "rust_lock",
        "fail",
        f"rust_lock: {paths.relative(lock.path)} exists but names no process ralph can check (no readable "
        "`owner` file): ticks refuse to run",
        f"if no Rust ralph runs in {paths.root}, remove the directory (`rmdir {lock.path}`)",
    )


def _check_cache_ignored(ctx: _Context) -> Check:
    git = _need_git(ctx)
    _, paths = _need_config(ctx)
    problem = ownership.cache_not_ignored(git, paths)
    if problem is not None:
        detail, _, fix = problem.partition(": add ")
        return Check("cache_ignored", "fail", f"cache_ignored: {detail}", f"add {fix}" if fix else None)
    return Check("cache_ignored", "ok", "cache_ignored: .ralph/cache/ is ignored by git")


def _check_identity(ctx: _Context) -> Check:
    git = _need_git(ctx)
    root = ctx.root
    fix = (
        f'`git -C {root} config user.name "Ralph on $(hostname)"` and '
        f"`git -C {root} config user.email ralph@example.com` (in the repository, so a HOME that differs "
        "under cron or systemd does not matter)"
    )
    try:
        # The tick's own check: author and committer, as git works them out in the control checkout.
        check_identity(git)
    except PreflightError as e:
        said = str(e).split(": set one with", 1)[0]
        return Check("identity", "fail", f"identity missing: {said}", fix)
    ident = git.ident("COMMITTER").rsplit(" ", 2)[0]  # without the timestamp and zone
    configured = [bool(git.run("config", "--get", key, ok=(0, 1)).out) for key in ("user.name", "user.email")]
    from_env = [v for v in ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL") if os.environ.get(v)]
    if from_env and not all(configured):
        # cron and systemd start ralph with a bare environment: these variables will not be there.
        names = ", ".join(f"${v}" for v in from_env)
        return Check(
            "identity",
            "fail" if ctx.cron else "warning",
            f"committer identity {ident} comes from {names} in this environment, which cron and systemd "
            "do not set, and user.name/user.email are not both configured",
            fix,
        )
    return Check("identity", "ok", f"committer identity {ident}")


# --- origin and the queue ----------------------------------------------------------------------------


def _check_origin(ctx: _Context) -> Check:
    git = _need_git(ctx)
    config, _ = _need_config(ctx)
    remote = config.git.remote
    try:
        url = _redact(git.run("remote", "get-url", remote).out)
    except GitError:
        return Check(
            "origin",
            "fail",
            f"no remote {remote!r} in {ctx.root}",
            f"`git -C {ctx.root} remote add {remote} <url>` (or set git.remote in .ralph/config.toml)",
        )
    base = _need_base(ctx)
    try:
        listing = git.run("ls-remote", remote, f"refs/heads/{base}", timeout=LS_REMOTE_TIMEOUT_S).out
    except GitError as e:
        reason = _git_message(e.stderr) if e.stderr.strip() else str(e)
        return Check(
            "origin",
            "fail",
            f"{remote} unreachable ({url}): {reason}",
            f"check the URL (`git -C {ctx.root} remote get-url {remote}`) and the network, and that the user "
            "ralph runs as can authenticate with no prompt (an SSH key without a passphrase, or a "
            "credential helper); ticks cannot fetch or land anything meanwhile",
        )
    # ls-remote matches patterns by their tail (refs/heads/x/refs/heads/main too): keep the exact ref.
    heads = {ref: sha for sha, _, ref in (line.partition("\t") for line in listing.splitlines())}
    sha = heads.get(f"refs/heads/{base}")
    if sha is None:
        return Check(
            "origin",
            "fail",
            f"{remote} ({url}) has no branch {base!r}",
            f"push it (`git push {remote} HEAD:{base}`), or set git.base_branch in .ralph/config.toml",
        )
    return Check("origin", "ok", f"{remote} reachable ({url}); {base} is at {sha[:10]}")


# What a server must allow for claims, said once for doctor and the README.
CLAIMS_FIX: Final = (
    "let the user ralph pushes as create, update and delete refs under refs/ralph/ with atomic pushes, "
    "and list them: on GitHub no ruleset may restrict refs/ralph/**; on GitLab no push rule or server "
    "hook may refuse them; on Gerrit grant Push, Create Reference and Delete Reference on refs/ralph/*; "
    "on your own server check its update and pre-receive hooks, and that receive.hideRefs and "
    "uploadpack.hideRefs leave refs/ralph alone"
)


def _check_claims(ctx: _Context) -> Check:
    """Whether the remote keeps claims and shared task facts (ralph.claims): a probe ref pushed with an
    atomic leased push, listed, and deleted."""
    git = _need_git(ctx)
    config, _ = _need_config(ctx)
    base = _need_base(ctx)
    assert ctx.root is not None
    remote, mode = config.git.remote, config.hosts.mode
    tip = git.run("rev-parse", "--verify", "--quiet", f"refs/remotes/{remote}/{base}", ok=(0, 1)).out
    if not tip:
        raise _NotChecked(f"{remote}/{base} was never fetched here")
    try:
        problem = probe(git, remote=remote, host=host_id(ctx.root), commit=tip)
    except GitError as e:
        raise _NotChecked(f"{remote} could not be asked ({one_line(str(e), 200)})") from None
    if problem is None:
        return Check(
            "claims",
            "ok",
            f"claims: {remote} takes atomic, leased pushes to refs/ralph/ (hosts.mode = {mode})",
        )
    if mode == "multi":
        return Check(
            "claims",
            "fail",
            f"claims: {problem}; with hosts.mode = multi no task can be claimed, so none starts",
            f'{CLAIMS_FIX}; or, with one host only, set hosts.mode = "single" in .ralph/config.toml',
        )
    return Check(
        "claims",
        "warning",
        f"claims: {problem}; attempts, cancellations and blocks stay on this host (hosts.mode = single)",
        CLAIMS_FIX,
    )


def _redact(url: str) -> str:
    """A URL with a password or token in it is shown without it: doctor output gets pasted in issues."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)


def _check_queue(ctx: _Context) -> Check:
    git = _need_git(ctx)
    config, paths = _need_config(ctx)
    base = _need_base(ctx)
    assert ctx.root is not None
    checkout = Checkout(root=ctx.root, paths=paths, config=config)
    ref = f"refs/remotes/{config.git.remote}/{base}"
    label = f"{config.git.remote}/{base}"
    fetched = git.run("rev-parse", "--verify", "--quiet", ref, ok=(0, 1)).out
    level: Level = "ok"
    fix: str | None = None
    tracked = False
    if not fetched:
        # Doctor does not fetch; a clone that never fetched the base can only show the working tree.
        queues = load_local_queues(paths)
        where = f"read from the working tree: {label} was never fetched here, so what a tick reads is unknown"
        level, fix = "warning", f"`git -C {ctx.root} fetch {config.git.remote}`, then run doctor again"
    else:
        # Mixed tracked/untracked, unpublished files and .json-plus-.jsonc are refused here as a tick
        # refuses them (PreflightError / QueueError); their messages say what to change.
        try:
            source = detect_source(checkout, git, base)
            queues = read_queues(checkout, source)
        except PreflightError as e:
            return Check(
                "queue", "fail", f"queue: {e}", "do what the message says; ticks refuse to run until then"
            )
        except QueueError as e:
            return Check(
                "queue",
                "fail",
                f"queue unreadable on {label} (as last fetched, {fetched[:10]}): {e}",
                f"fix the file on {base} and push it (`ralph queue validate` names every problem); ticks "
                "refuse to run until then",
            )
        tracked = source.mode is Mode.TRACKED
        where = (
            f"tracked on {label}, as last fetched: {fetched[:10]}"
            if tracked
            else "untracked: both files gitignored, read from the working tree"
        )
    problems = queues.problems(config.queue)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Check(
            "queue",
            "fail",
            f"queue invalid ({where}): {problems[0]}{more}",
            "`ralph queue validate` lists every problem; fix them"
            + (f" on {base} and push" if tracked else "")
            + "; ticks refuse to run until then",
        )
    return Check("queue", level, f"queue valid ({where}): {_counts(queues)}", fix)


def _counts(queues: Queues) -> str:
    return f"{len(queues.queue.tasks)} in the queue, {len(queues.done.tasks)} in the done archive"


# --- state, lock, workspace root ---------------------------------------------------------------------


def _check_state(ctx: _Context) -> Check:
    assert ctx.root is not None
    paths = ctx.paths or Paths.for_root(ctx.root)
    path = paths.state
    quarantined = sorted(path.parent.glob(path.name + ".corrupt-*")) if path.parent.is_dir() else []
    copies = ", ".join(p.name for p in quarantined)
    base = ctx.base or "main"
    remote = ctx.config.git.remote if ctx.config else "origin"
    try:
        # under_lock=False: a damaged file raises instead of being copied aside. Doctor writes nothing.
        state = load_state(path, now=ctx.now, target_branch=base, remote=remote, under_lock=False)
    except RalphError as e:
        ctx.state_problem = "invalid"
        detail = _strip_doctor_hint(str(e))
        saved = f" (earlier copies saved by ticks: {copies})" if copies else ""
        if _newer_schema(path):
            return Check(
                "state", "fail", f"state.json {detail}", "upgrade ralph to the version that wrote it"
            )
        return Check(
            "state",
            "fail",
            f"state.json invalid: {detail}{saved}",
            "ticks refuse to run until it is repaired. With the timer stopped, fix the file by hand "
            "(README: 'state.json' shows every key), or move it aside to start afresh "
            f"(`mv {path} {path}.bad`), which forgets the jobs it records: stop any still running "
            "(their pids are in the file), and their workspaces then show up here as orphans",
        )
    ctx.state = state
    if not path.exists():
        detail = "state.json: none yet (no tick has run here)"
    else:
        detail = f"state.json valid: {_plural(len(state.workers), 'worker record')}"
    busy = [w.task_id for w in state.workers if w.lifecycle not in Lifecycle.terminal()]
    if ctx.config and ctx.base and (state.target_branch, state.remote) != (base, remote) and busy:
        return Check(
            "state",
            "fail",
            f"{detail}, but it belongs to {state.remote}/{state.target_branch} and the config says "
            f"{remote}/{base} while {', '.join(busy)} are in flight",
            "set git.base_branch back until they finish, or `ralph cancel` them first",
        )
    if quarantined:
        return Check(
            "state",
            "warning",
            f"{detail}; quarantined copies of an earlier, damaged one remain: {copies}",
            "a tick found state.json damaged and kept these copies; nothing reads them again. Once you have "
            f"looked at them (and state.json is right), delete them: `rm {path}.corrupt-*`",
        )
    return Check("state", "ok", detail)


_DOCTOR_HINT = re.compile(r";? ?`ralph doctor` explains[^;]*$")


def _strip_doctor_hint(message: str) -> str:
    # load_state's message sends the reader to `ralph doctor`, which is where they are.
    text = _DOCTOR_HINT.sub("", message)
    return text.split(": ", 1)[1] if text.startswith("/") and ": " in text else text


def _newer_schema(path: Path) -> bool:
    try:
        raw = loads_json(path.read_bytes())
    except (OSError, ValueError):
        return False
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    return isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION


# How safe the tick lock is on each kind of filesystem (files.filesystem_kind says which kind).
_LOCK_SAFETY: Final[dict[files.FilesystemKind, Level]] = {
    "local": "ok",
    "shared": "warning",
    "network": "fail",
}


def _check_lock(ctx: _Context) -> Check:
    assert ctx.root is not None
    lock = (ctx.paths or Paths.for_root(ctx.root)).lock
    fstype = files.filesystem_type(lock.parent)
    if fstype is None:
        return Check(
            "lock",
            "warning",
            f"lock: cannot tell which filesystem holds {lock.parent} (/proc/self/mountinfo unreadable)",
            "make sure the checkout is on a local disk, not NFS or SMB",
        )
    level = _LOCK_SAFETY[files.filesystem_kind(fstype)]
    if level != "ok":
        kind = "a network filesystem" if level == "fail" else "a shared or FUSE filesystem"
        return Check(
            "lock",
            level,
            f"lock {lock} is on {fstype}, {kind}: flock there may not keep a second tick out (two agents on "
            "one task, two landings racing) or may hang when the server is slow",
            "move the checkout to a local disk (ext4, xfs, btrfs, ...)",
        )
    detail = f"lock {ctx.paths.relative(lock) if ctx.paths else lock} on a local filesystem ({fstype})"
    holders = proc.lock_holders(lock) if lock.exists() else []
    if not holders:
        return Check("lock", "ok", detail + "; not held")
    owner = health.read_lock_holder(lock)
    since = owner.since if owner is not None and owner.pid in holders else None
    pid = holders[0]
    if since is not None and ctx.now - since > LONG_HELD_LOCK:
        return Check(
            "lock",
            "warning",
            f"{detail}; held by pid {pid} since {format_z(since)} ({duration(ctx.now - since)}): a tick "
            "that has not finished, so every tick since has exited with 75 and done nothing",
            f"see what it is doing (`ps -o pid,etime,args -p {pid}`, `cat /proc/{pid}/stack`); if it is "
            f"stuck, `kill {pid}`: the kernel releases the lock and the next tick carries on",
        )
    return Check("lock", "ok", f"{detail}; held by pid {pid} (a tick or another ralph command is at work)")


def _check_workspace_root(ctx: _Context) -> Check:
    git = _need_git(ctx)
    _, paths = _need_config(ctx)
    # Raises PreflightError with the fixes, exactly as the tick's preflight does.
    check_workspace_root(git, paths)
    rel = paths.relative(paths.workspace_root)
    if rel.startswith("/"):
        return Check("workspace_root", "ok", f"workspace root {rel} is outside the repository")
    return Check("workspace_root", "ok", f"workspace root {rel} is inside the repository and gitignored")


# --- programs on PATH ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    level: Level
    detail: str
    fix: str | None = None
    path: str | None = None  # the executable a tick would run


def _locate(binary: str, root: Path, ctx: _Context, *, what: str, key: str | None) -> _Found:
    """Can a tick started by cron or systemd run `binary`, and if not, what to change."""
    set_key = f", or set {key} to " if key else ""
    found, via = lookup(binary, root, ctx.path_env)
    if found is None:
        mine, mine_dir = lookup(binary, root, os.environ.get("PATH", os.defpath))
        if ctx.cron and mine is not None and mine_dir is not None:
            return _Found(
                "fail",
                f"{what} {binary!r} is not on cron's PATH ({CRON_PATH}); yours finds it in {mine_dir}",
                f"put `PATH={mine_dir}:{CRON_PATH}` at the top of the crontab (or "
                f"`Environment=PATH={mine_dir}:{CRON_PATH}` in the systemd unit)"
                + (set_key + mine if key else ""),
            )
        if "/" not in binary:
            where = f" on PATH ({ctx.path_env})"
        elif not os.path.isabs(os.path.expanduser(binary)):
            where = f" in {root}"
        else:
            where = ""
        return _Found(
            "fail",
            f"{what} {binary!r} is not an executable{where}",
            "install it" + (f", or set {key} to its absolute path" if key else ""),
        )
    if via is not None and not ctx.cron:
        reason = fragile_reason(via)
        if reason is not None:
            return _Found(
                "warning",
                f"{what} {found} is found through {via} on your PATH, {reason}: cron and systemd start "
                "ralph without it, and the tick will not find it",
                f"add it to the PATH ralph gets: `PATH={via}:{CRON_PATH}` at the top of the crontab (or "
                f"`Environment=PATH={via}:/usr/local/bin:{CRON_PATH}` in the systemd unit)"
                + (set_key + found if key else ""),
                found,
            )
    return _Found("ok", f"{what} {found}", None, found)


def _check_program(ctx: _Context, name: str, binary: str, *, what: str, key: str) -> Check:
    assert ctx.root is not None
    found = _locate(binary, ctx.root, ctx, what=what, key=key)
    if found.path is None:
        return Check(name, found.level, found.detail, found.fix)
    findings = [found]
    shebang = interpreter(found.path)
    if shebang is not None:
        program, through_env = shebang
        if through_env:
            # An npm-installed agent is `#!/usr/bin/env node`: node must be on the tick's PATH as well,
            # and setting agent.binary to an absolute path does not help with that.
            via = _locate(
                program, ctx.root, ctx, what=f"its interpreter ({program}, by #!/usr/bin/env)", key=None
            )
            if via.level != "ok":
                findings.append(via)
        elif not os.access(program, os.X_OK):
            findings.append(
                _Found("fail", f"its interpreter {program} (its #! line) is not executable", "install it")
            )
    worst = max(findings, key=lambda f: _SEVERITY[f.level])
    detail = "; ".join(f.detail for f in findings)
    fixes = "; ".join(f.fix for f in findings if f.fix)
    return Check(name, worst.level, detail, fixes or None)


def _check_agent(ctx: _Context) -> Check:
    config, _ = _need_config(ctx)
    agent = config.agent
    return _check_program(
        ctx, "agent", runners.agent_binary(agent), what=f"agent (runner {agent.runner!r})", key="agent.binary"
    )


def _check_credentials(ctx: _Context) -> Check:
    """A preset's CLI must reach its model: a key, an endpoint, or a login file in ~ (copied into each
    job's private HOME)."""
    config, _ = _need_config(ctx)
    agent = config.agent
    if agent.runner == "command":
        return Check("credentials", "ok", 'credentials: runner "command" is your own program: not checked')
    if agent.api_key_env and agent.api_key_env not in os.environ:
        return Check(
            "credentials",
            "fail",
            f"credentials: agent.api_key_env names ${agent.api_key_env}, which is not set in ralph's "
            "environment: every agent run would go without its key",
            f"set {agent.api_key_env} where ticks start (the crontab, or Environment= in the systemd unit)",
        )
    preset = runners.PRESETS[agent.runner]
    found = []
    if agent.base_url:
        found.append(f"endpoint {agent.base_url} (agent.base_url)")
    if agent.api_key_env:
        found.append(f"${agent.api_key_env} (agent.api_key_env)")
    found += [f"${name}" for name in runners.credential_names(agent, os.environ)]
    found += [f"agent.env.{name}" for name in agent.env if name.startswith(preset.credential_env)]
    home = Path.home()
    found += [f"~/{rel}" for rel in runners.credential_files(agent) if (home / rel).is_file()]
    if found:
        return Check("credentials", "ok", f"credentials: runner {agent.runner!r} gets {', '.join(found)}")
    variables = ", ".join(f"{p}*" for p in preset.credential_env)
    logins = ", ".join(f"~/{rel}" for rel in runners.credential_files(agent))
    return Check(
        "credentials",
        "fail",
        f"credentials: runner {agent.runner!r} has no key and no endpoint: no {variables} variable is set, "
        f"none of {logins} exists, and agent.base_url is empty",
        f"log in with `{preset.binary}` once as the user ticks run as, or set its API key where ticks start, "
        'or set agent.base_url and agent.api_key_env (README "Agent runners")',
    )


def _check_agent_versions(ctx: _Context) -> Check:
    """Every preset CLI installed here, against the version its preset was checked with."""
    config, _ = _need_config(ctx)
    assert ctx.root is not None
    agent = config.agent
    found: dict[str, str] = {}
    for name, preset in runners.PRESETS.items():
        binary = agent.binary if agent.runner == name and agent.binary else preset.binary
        path, _ = lookup(binary, ctx.root, ctx.path_env)
        if path is not None:
            found[name] = path
    if not found:
        names = ", ".join(runners.PRESETS)
        return Check("agent_versions", "ok", f"agent_versions: none of {names} is installed here")
    with ThreadPoolExecutor(max_workers=len(found)) as pool:
        versions = dict(zip(found, pool.map(runners.installed_version, found.values()), strict=True))
    parts = []
    level: Level = "ok"
    fix = None
    for name, version in versions.items():
        tested = runners.TESTED_CLIS[name][2]
        if version == tested:
            parts.append(f"{name} {version} (the version tested)")
            continue
        parts.append(f"{name} {version or '(no version)'} (tested: {tested})")
        if name == agent.runner:
            level = "warning"
            fix = (
                f"install {runners.TESTED_CLIS[name][1]}@{tested}, or read contrib/agents/FACTS.md and check "
                f"that {name} {version or 'as installed'} still behaves so (its flags, output, limits)"
            )
    return Check("agent_versions", level, f"agent_versions: {'; '.join(parts)}", fix)


def _check_ci(ctx: _Context) -> Check:
    config, _ = _need_config(ctx)
    if not config.ci.command:
        return Check("ci", "ok", "ci: no CI gate (ci.command = []): work lands once its agent succeeds")
    check = _check_program(ctx, "ci", config.ci.command[0], what="CI command", key="ci.command[0]")
    if check.level == "fail" or not makefile.is_make(config.ci.command):
        return check
    target = _make_target(ctx, config.ci.command)
    worst = max(check.level, target.level, key=lambda lv: _SEVERITY[lv])
    fixes = "; ".join(f for f in (check.fix, target.fix) if f)
    return Check("ci", worst, f"{check.detail}; {target.detail}", fixes or None)


def _make_target(ctx: _Context, command: list[str]) -> _Found:
    """Whether the makefile the gate's `make` reads, as the base has it, has a rule for its goals."""
    git = _need_git(ctx)
    config, paths = _need_config(ctx)
    invocation = makefile.parse(command)
    ref = f"refs/remotes/{config.git.remote}/{ctx.base}" if ctx.base else None
    fetched = ref is not None and bool(git.run("rev-parse", "--verify", "--quiet", ref, ok=(0, 1)).out)
    where = f"{config.git.remote}/{ctx.base}" if fetched else "the working tree"
    for candidate in invocation.candidates():
        if fetched:
            shown = git.run("show", f"{ref}:{candidate}", ok=(0, 128))
            text = shown.out if shown.returncode == 0 else None
        else:
            file = paths.root / candidate
            text = file.read_text(errors="replace") if file.is_file() else None
        if text is not None:
            break
    else:
        names = " or ".join(invocation.candidates())
        return _Found(
            "fail",
            f"`{' '.join(command)}` needs {names}, and {where} has none: every gate run fails",
            "commit a Makefile with that target, or set ci.command to the command that checks your code",
        )
    rules = makefile.read_rules(text)
    goals = list(invocation.goals) or ([rules.first] if rules.first else [])
    missing = [g for g in goals if g not in rules.targets]
    if not goals:
        missing = ["(a default goal)"]
    if not missing:
        return _Found("ok", f"{candidate} on {where} has a rule for {', '.join(goals)}")
    what = f"{candidate} on {where} has no rule for {', '.join(missing)}"
    if rules.unsure:
        return _Found(
            "warning",
            f"{what} that doctor can see ({'; '.join(rules.unsure)})",
            f"make sure `{' '.join(command)}` works in a fresh checkout",
        )
    return _Found(
        "fail",
        f"{what}: every gate run fails (make: *** No rule to make target)",
        f"add a `{missing[0]}:` rule to {candidate} and push it, or set ci.command",
    )


def _check_sandbox(ctx: _Context) -> Check:
    """Every job runs in a bubblewrap box unless sandbox.mode = "none" (ticks refuse to run without it)."""
    config, _ = _need_config(ctx)
    if config.sandbox.mode == "none":
        return Check(
            "sandbox",
            "warning",
            'sandbox: sandbox.mode = "none": every job runs unboxed, as ralph itself, with ralph\'s files, '
            "your credentials and the remote within its reach",
            'remove sandbox.mode (the default is "bwrap") once bubblewrap works here (README "Security '
            'model")',
        )
    found = sandbox.probe()
    if not found.ok:
        return Check(
            "sandbox",
            "fail",
            f"sandbox: {found.problem}: ticks refuse to run, as every job runs in a bubblewrap box",
            f"{sandbox.INSTALL_HINT}; or, knowing that agents then run as ralph itself, set "
            'sandbox.mode = "none" in .ralph/config.toml',
        )
    return Check("sandbox", "ok", f"sandbox: {found.version or 'bubblewrap'} starts a box")


# --- systemd ------------------------------------------------------------------------------------------


def _check_systemd(ctx: _Context) -> Check:
    assert ctx.root is not None
    units = systemd.find_units(ctx.root)
    if not units:
        return Check("systemd", "ok", "systemd: no unit found for this checkout (cron, or none installed)")
    findings = []
    for unit in units:
        mode = unit.kill_mode or "control-group"
        reload = "systemctl --user daemon-reload" if unit.user_unit else "systemctl daemon-reload"
        if mode == "process":
            findings.append(_Found("ok", f"systemd unit {unit.path} has KillMode=process"))
        elif mode == "none":
            findings.append(
                _Found(
                    "warning",
                    f"systemd unit {unit.path} has KillMode=none: jobs survive the tick, but systemd "
                    "deprecates it",
                    f"use KillMode=process under [Service] in {unit.path}, then `{reload}`",
                )
            )
        else:
            shown = f"KillMode={mode}" + ("" if unit.kill_mode else " (the default)")
            findings.append(
                _Found(
                    "fail",
                    f"systemd unit {unit.path} runs ralph here with {shown}: when the tick exits, systemd "
                    "kills every process it started, so every agent and CI job dies with the tick",
                    f"add `KillMode=process` under [Service] in {unit.path}, then `{reload}`",
                )
            )
    worst = max(findings, key=lambda f: _SEVERITY[f.level])
    fixes = "; ".join(f.fix for f in findings if f.fix)
    return Check("systemd", worst.level, "; ".join(f.detail for f in findings), fixes or None)


# --- jobs and workspaces --------------------------------------------------------------------------------


def _check_jobs(ctx: _Context) -> Check:
    state = _need_state(ctx)
    grace = (ctx.config.parallel if ctx.config else ParallelConfig()).kill_grace_seconds
    live: list[str] = []
    problems: list[tuple[Level, str, str]] = []
    for worker in state.workers:
        job = worker.job
        if worker.lifecycle not in Lifecycle.active() or job is None:
            continue
        what = f"{worker.task_id} ({worker.lifecycle}): its {job.kind} job (pid {job.pid})"
        # The very test a tick makes (ralph.job.check): result file first, then (boot, pid, start) identity.
        outcome, _ = jobs.check(
            job.identity, Path(job.result_path), deadline=job.deadline, grace_s=grace, now=ctx.now
        )
        if outcome is jobs.Outcome.RUNNING:
            live.append(f"{worker.task_id} {job.kind} pid {job.pid}")
        elif outcome is jobs.Outcome.FINISHED:
            live.append(f"{worker.task_id} {job.kind} finished")
        elif outcome is jobs.Outcome.OVERDUE:
            problems.append(
                (
                    "warning",
                    f"{what} is still alive past its deadline {format_z(job.deadline)}",
                    f"the next tick kills its process group; if ticks are not running, check the lock "
                    f"and the timer, or `ralph cancel {worker.task_id}`",
                )
            )
        else:
            problems.append(
                (
                    "warning",
                    f"{what} is gone and left no result (killed, or the host restarted); the next tick will "
                    "mark it lost",
                    "nothing to do by hand: the attempt fails and is retried while attempts are left. If "
                    f"jobs die like this often, read {job.log_path} and check the systemd unit's KillMode",
                )
            )
    if problems:
        return _combined("jobs", problems)
    if not live:
        return Check("jobs", "ok", "jobs: none recorded as running")
    return Check("jobs", "ok", f"jobs: {len(live)} recorded, all accounted for ({', '.join(live)})")


def _check_workspaces(ctx: _Context) -> Check:
    state = _need_state(ctx)
    config, paths = _need_config(ctx)
    base, remote = ctx.base or "main", config.git.remote
    problems: list[tuple[Level, str, str]] = []
    for worker in state.workers:
        if worker.lifecycle not in _NEEDS_WORKSPACE or Path(worker.workspace_path).exists():
            continue
        problems.append(_missing_workspace(worker))
    recorded = {Path(w.workspace_path).resolve() for w in state.workers}
    root = paths.workspace_root
    orphans = (
        sorted(p for p in root.iterdir() if (p.is_dir() or p.is_symlink()) and p.resolve() not in recorded)
        if root.is_dir()
        else []
    )
    if orphans:
        names = ", ".join(p.name for p in orphans)
        example = orphans[0]
        problems.append(
            (
                "warning",
                f"{_plural(len(orphans), 'workspace')} in {paths.relative(root)} with no worker record "
                f"(orphans): {names}",
                f"`ralph discard {example.name}` saves any commits of its own to refs/ralph/attic/ and "
                f"removes it (look first with `git -C {example} log --oneline {remote}/{base}..HEAD`)",
            )
        )
    if problems:
        return _combined("workspaces", problems)
    count = sum(1 for w in state.workers if Path(w.workspace_path).exists())
    return Check("workspaces", "ok", f"workspaces: {count} on disk, each owned by a worker record")


def _missing_workspace(worker: Worker) -> tuple[Level, str, str]:
    what = f"{worker.task_id} ({worker.lifecycle}) has no workspace at {worker.workspace_path}"
    if worker.lifecycle in Lifecycle.active():
        return (
            "fail",
            what + ": its job has nothing to work in",
            f"`ralph cancel {worker.task_id}` stops its job and ends the record; "
            f"`ralph retry {worker.task_id}` starts it afresh",
        )
    return (
        "warning",
        what + ": its verified work cannot be landed from it",
        f"`ralph discard {worker.task_id}` drops the record (the task stays queued and starts afresh)",
    )


def _check_ticks(ctx: _Context) -> Check:
    assert ctx.root is not None
    found = health.load(ctx.root)
    last = found.last
    if last is None:
        return Check("ticks", "ok", "ticks: none recorded yet (each `ralph run` records how it ended)")
    ago = duration(ctx.now - last.at)
    if found.ok:
        return Check("ticks", "ok", f"ticks: the last one ended {ago} ago (exit {last.exit_code})")
    problem = one_line(found.problem, 400)
    if found.verdict == "hung":
        pid = last.holder.pid if last.holder else "?"
        return Check(
            "ticks",
            "fail",
            f"{problem} (last tick {ago} ago)",
            f"see what it is doing (`ps -o pid,etime,args -p {pid}`, `cat /proc/{pid}/stack`); if it is "
            f"stuck, `kill {pid}`: the kernel releases the lock and the next tick carries on",
        )
    if found.verdict == "offline":
        return Check(
            "ticks",
            "warning",
            f"{problem} (last tick {ago} ago): nothing verified can land meanwhile",
            "the origin check below says whether the remote answers now; check the network and credentials",
        )
    return Check(
        "ticks",
        "fail",
        f"{problem} (last tick {ago} ago)",
        "fix what the error says (the checks below may name it too); every tick fails until then",
    )


# In the order they are printed: the machine, then the checkout, what a tick needs first coming first.
def _check_paused(ctx: _Context) -> Check:
    _, paths = _need_config(ctx)
    paused = read_pause(paths.pause)
    held = [p for p in (ctx.state.runner_pauses if ctx.state else []) if p.active(ctx.now)]
    if paused is None and not held:
        return Check("paused", "ok", "not paused: ticks start new tasks")
    said = [f"{paused.describe()}: ticks start no new task"] if paused else []
    said += [
        f"{p.describe(ctx.now)}: no {p.runner} agent starts before {short_time(p.until, ctx.now)}"
        for p in held
    ]
    return Check(
        "paused",
        "warning",
        "; ".join(said),
        "`ralph resume` when new work may start again"
        + (" (it lifts the runner's pause too)" if held else ""),
    )


_MACHINE_CHECKS: Final[tuple[tuple[str, Callable[[_Context], Check]], ...]] = (
    ("git", _check_git),
    ("user", _check_user),
    ("repository", _check_repository),
)
_CHECKOUT_CHECKS: Final[tuple[tuple[str, Callable[[_Context], Check]], ...]] = (
    ("ticks", _check_ticks),
    ("config", _check_config),
    ("setup", _check_setup),
    ("rust_config", _check_rust_config),
    ("identity", _check_identity),
    ("origin", _check_origin),
    ("claims", _check_claims),
    ("queue", _check_queue),
    ("state", _check_state),
    ("lock", _check_lock),
    ("rust_lock", _check_rust_lock),
    ("workspace_root", _check_workspace_root),
    ("cache_ignored", _check_cache_ignored),
    ("sandbox", _check_sandbox),
    ("agent", _check_agent),
    ("credentials", _check_credentials),
    ("agent_versions", _check_agent_versions),
    ("ci", _check_ci),
    ("systemd", _check_systemd),
    ("jobs", _check_jobs),
    ("workspaces", _check_workspaces),
    ("paused", _check_paused),
)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _combined(name: str, problems: Sequence[tuple[Level, str, str]]) -> Check:
    """One check from several findings: the worst level, every detail and every fix."""
    level = max((p[0] for p in problems), key=lambda lv: _SEVERITY[lv])
    return Check(
        name, level, f"{name}: " + "; ".join(p[1] for p in problems), "; ".join(p[2] for p in problems)
    )


def _git_message(stderr: str) -> str:
    """The line of git's stderr that says what went wrong (not its closing advice)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (fatal or lines or ["no message"])[0]
