"""Every git call goes through here: the only module that imports `sh`.

Commands are argv tuples of plain strings (no keyword-to-flag magic), run without a TTY (no pager, no
colour), with a timeout, and with failures turned into GitError carrying the command and its stderr.

`sh` is imported when the first Git is made, not with this module: the tick's idle check (ralph.stamp)
asks the remote one question with `subprocess` alone (`ls_remote_listing`), and a tick with nothing to do
never pays for importing sh. For the same reason the records here are NamedTuples (dataclasses brings
`inspect`) and pathlib is named only for the type checker: the idle path is ~25 ms of imports in all.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from ralph.errors import GitError, PreflightError

if TYPE_CHECKING:
    from pathlib import Path

    import sh as sh_module

DEFAULT_TIMEOUT_S = 120.0

# For git in a workspace, whose configuration the agent controls: nothing it planted there may run.
UNTRUSTED = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "core.sshCommand=false")
PIPE_BUFFER = 64 * 1024
_IDENT = re.compile(r"^(.*) <([^<>]*)> \d+ [-+]\d{4}$")
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

# Variables that would point git at another repository than the one we name (set when ralph runs
# from inside a git hook, say). Everything else, identity and dates included, is the user's to set.
REPO_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_QUARANTINE_PATH",
)


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in REPO_LOCATION_VARS}
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password nobody will type
    env["LC_ALL"] = "C"  # messages we classify are the untranslated ones
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes -o ConnectTimeout=20"
    if extra:
        env.update(extra)
    return env


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    data: bytes = b""  # stdout as git wrote it, for blobs

    @property
    def out(self) -> str:
        """stdout without its trailing newline."""
        return self.stdout.rstrip("\n")


_GIT_VERSION = re.compile(r"git version (\d+)\.(\d+)(?:\.(\d+))?")


def parse_git_version(text: str) -> tuple[int, int, int] | None:
    """`git version 2.39.5` (or `2.39.3 (Apple Git-145)`, `2.45.1.windows.1`) as numbers."""
    m = _GIT_VERSION.search(text)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


class Git:
    """git in one directory."""

    def __init__(self, cwd: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.cwd = cwd
        sh = _sh()
        try:
            command = sh.Command("git")
        except sh.CommandNotFound:
            raise PreflightError("git is not installed or not on PATH; install git (2.31 or newer)") from None
        # sh reads output in small pieces by default; a queue file of megabytes then costs ~80 ms of
        # Python per read instead of ~20 (bench/README.md, "Scale").
        self._git = command.bake(
            _cwd=str(cwd),
            _tty_out=False,
            _env=git_env(env),
            _truncate_exc=False,
            _out_bufsize=PIPE_BUFFER,
            _err_bufsize=PIPE_BUFFER,
        )
        self._trees: dict[str, str] = {}  # commit sha -> its tree: a commit's tree never changes
        self._idents: dict[str, str] = {}

    def trees(self, commits: Sequence[str]) -> list[str]:
        """The tree of each of `commits`, asked in one call for those this Git has not met: a train
        replays onto the same positions and bases again and again."""
        answer = {c: self._trees[c] for c in commits if c in self._trees}
        unknown = [c for c in dict.fromkeys(commits) if c not in answer]
        if unknown:
            specs = [f"{c}^{{tree}}" for c in unknown]
            found = object_names(self, specs)
            for commit, spec in zip(unknown, specs, strict=True):
                if spec not in found:
                    raise GitError(f"{commit} names no commit here", argv=("cat-file", spec), cwd=self.cwd)
                answer[commit] = found[spec]
                if _FULL_SHA.fullmatch(commit):  # a ref or a short name may name another commit later
                    self._trees[commit] = found[spec]
        return [answer[c] for c in commits]

    def made(self, commit: str, tree: str) -> None:
        """Note the tree of a commit just written here, so that trees() need not ask."""
        self._trees[commit] = tree

    @cached_property
    def version(self) -> tuple[int, int, int]:
        """This git's version, asked once per Git: a train tick replays dozens of times."""
        return parse_git_version(self.run("--version").out) or (0, 0, 0)

    def run(
        self,
        *args: str,
        ok: tuple[int, ...] = (0,),
        timeout: float | None = DEFAULT_TIMEOUT_S,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """Run `git <args>`; an exit code outside `ok`, a timeout or a signal raises GitError."""
        # Not sh's `_timeout`: its watchdog thread polls every 0.1 s and the call waits for it to notice
        # the exit, so every git call took at least 100 ms (10x a typical plumbing command). The
        # command runs with _bg (no exception reported from sh's thread: _bg_exc=False) and a timer of
        # our own kills it, as `_timeout` would, with SIGKILL to git alone.
        options: dict[str, Any] = {
            "_bg": True,
            "_bg_exc": False,
            "_ok_code": ok,
            "_decode_errors": "replace",
        }
        if input is not None:
            options["_in"] = input
        if env is not None:
            options["_env"] = git_env(env)
        display = "git " + shlex.join(args)
        sh = _sh()
        expired = threading.Event()
        timer: threading.Timer | None = None
        try:
            cmd = self._git(*args, **options)
            if timeout is not None:
                timer = threading.Timer(timeout, _expire, (cmd, expired))
                timer.daemon = True
                timer.start()
            cmd.wait()
        except sh.ErrorReturnCode as e:
            if expired.is_set():
                raise GitError(f"`{display}` timed out after {timeout:g}s in {self.cwd}", argv=args) from None
            if isinstance(e, sh.SignalException):  # pragma: no cover (git killed from outside)
                raise GitError(f"`{display}` was killed by a signal in {self.cwd}", argv=args) from None
            stderr = e.stderr.decode(errors="replace")
            raise GitError(
                f"`{display}` failed in {self.cwd} (exit {e.exit_code}): {_last_line(stderr)}",
                argv=args,
                cwd=self.cwd,
                returncode=e.exit_code,
                stdout=e.stdout.decode(errors="replace"),
                stderr=stderr,
            ) from None
        except sh.ForkException as e:
            # The child could not start git (its cwd is gone, say); sh wraps the child's traceback, whose
            # last line names the OSError. Nothing outside this module may see an sh exception (rule 5).
            reason = _last_line(str(e))
            raise GitError(
                f"`{display}` could not start in {self.cwd}: {reason}", argv=args, cwd=self.cwd
            ) from None
        finally:
            if timer is not None:
                timer.cancel()
        return Result(
            cmd.exit_code,
            cmd.stdout.decode(errors="replace"),
            cmd.stderr.decode(errors="replace"),
            cmd.stdout,
        )

    # --- questions ---------------------------------------------------------------------------

    def toplevel(self) -> Path:
        from pathlib import Path  # not at the top: the idle check imports this module, and pathlib is dear

        return Path(self.run("rev-parse", "--show-toplevel").out)

    def is_ignored(self, *paths: str) -> bool:
        """Whether any of `paths` is ignored. git-check-ignore(1): 0 = one or more ignored, 1 = none.

        (-q would silence the listing, but git allows it with one path only.)
        """
        result = self.run("check-ignore", "--", *paths, ok=(0, 1))
        return result.returncode == 0

    def is_ancestor(self, commit: str, of: str) -> bool:
        """Whether `commit` is in the history of `of` (the same commit counts)."""
        return self.run("merge-base", "--is-ancestor", commit, of, ok=(0, 1)).returncode == 0

    def ident(self, role: str) -> str:
        """`git var GIT_<role>_IDENT` (role: AUTHOR or COMMITTER), `Name <email> <seconds> <zone>`, asked
        once per Git: the preflight, the train's positions and the landing all need it, and one tick's
        commits may well carry the time it was first asked. GitError when git has no such identity."""
        if role not in self._idents:
            self._idents[role] = self.run("var", f"GIT_{role}_IDENT").out
        return self._idents[role]

    def identity(self) -> dict[str, str]:
        """Who git says commits here are by (repository config included), as GIT_AUTHOR_* and
        GIT_COMMITTER_* variables: for commits made where only global config is read."""
        env: dict[str, str] = {}
        for role in ("AUTHOR", "COMMITTER"):
            ident = self.ident(role)
            match = _IDENT.match(ident)
            if match is None:
                raise GitError(f"git var GIT_{role}_IDENT printed {ident!r}, not `name <email> date`")
            env[f"GIT_{role}_NAME"], env[f"GIT_{role}_EMAIL"] = match.groups()
        return env

    def default_branch(self, remote: str) -> str:
        """The branch a base defaults to: the remote's HEAD branch, else the current one, else main."""
        return self.remote_head_branch(remote) or self.current_branch() or "main"

    def current_branch(self) -> str | None:
        result = self.run("symbolic-ref", "--quiet", "--short", "HEAD", ok=(0, 1))
        return result.out or None

    def remote_head_branch(self, remote: str) -> str | None:
        """The branch `refs/remotes/<remote>/HEAD` points at, if the clone recorded it."""
        result = self.run("symbolic-ref", "--quiet", "--short", f"refs/remotes/{remote}/HEAD", ok=(0, 1))
        prefix = f"{remote}/"
        return result.out[len(prefix) :] if result.out.startswith(prefix) else None


@cache
def _sh() -> Any:
    import sh

    return sh


def _expire(cmd: sh_module.RunningCommand, expired: threading.Event) -> None:
    """The timeout of one git call: mark it, then kill git (an exit 0 racing the timer stays a success)."""
    expired.set()
    with contextlib.suppress(OSError):  # it exited between the timer firing and the kill
        cmd.kill()


def _last_line(text: str) -> str:
    """The line that says why: git's first `fatal:` (the advice after it says less), else the last."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith("fatal: ")]
    return fatal[0] if fatal else lines[-1] if lines else "no message"


def find_repository(start: Path) -> Path:
    """The top of the git work tree containing `start`."""
    if not start.is_dir():
        raise PreflightError(f"{start} is not a directory; run ralph in your checkout or pass -C <checkout>")
    try:
        return Git(start).toplevel()
    except GitError:
        raise PreflightError(
            f"{start} is not inside a git repository; run ralph in your checkout or pass -C <checkout>"
        ) from None


# --- pushing with a lease ------------------------------------------------------------------------


class PushStatus(Enum):
    OK = "ok"
    RACE = "race"  # the base moved (or our lease is stale): fetch, rebuild, try again
    TRANSPORT = "transport"  # the remote could not be reached, or said to try later: try again later
    PERMANENT = "permanent"  # the remote refuses this push for good (hook, protection, permission)


class PushResult(NamedTuple):
    status: PushStatus
    message: str  # the remote's reason, quoted for people


# --- what a remote says about a push it refused: every phrase ralph reads, in one place -------------
#
# Matched, lower-cased, against the `[remote rejected] (reason)` of the porcelain line and the
# `remote:` lines (a server's hook speaks there), or against all of stderr when git printed no verdict
# for the ref (the push never got that far). tests/test_push_verdicts.py replays each kind through
# real git: hooks and a proc-receive hook on a bare origin, and an HTTP server in front of
# git-http-backend that fails as a proxy or a busy forge does.

# Someone else updated the branch first: fetch, rebuild, push again.
RACE_PHRASES = (
    "fetch first",
    "non-fast-forward",
    "non-fast forward",  # JGit (Gerrit) spells it so
    "stale info",  # our lease no longer matches
    "failed to update ref",  # git's receive-pack lost the compare-and-swap to another push
    "cannot lock ref",
    "failed to lock",  # JGit's lock failure
)
# A named policy: the answer will be the same however often the push is tried.
POLICY_PHRASES = (
    "gh006",  # GitHub: protected branch update failed
    "gh013",  # GitHub: repository rule violations
    "gh001",  # GitHub: large files
    "gh007",  # GitHub: the push would publish a private email address
    "protected branch",  # GitHub, GitLab, Gitea, Bitbucket
    "prohibited by gerrit",
)
# The server could not take the push now and may later: an outage, maintenance, a repository being
# moved, a full disk, a proxy in trouble. Read after the named policies, before the plain refusals.
TEMPORARY_PHRASES = (
    "temporar",  # temporary, temporarily (GitLab: "The repository is temporarily read-only")
    "try again",
    "retry later",
    "timeout",
    "timed out",
    "time-out",
    "locked",  # a repository locked for a migration or a backup
    "unavailable",
    "internal server error",  # Gerrit's reason; Gitea's and GitLab's hooks when their API fails
    "internal error",  # Gogs
    "server error",
    "internal api unreachable",  # GitLab's hook could not reach GitLab
    "api is not accessible",
    "fatal error in commit_refs",  # GitHub during an incident: `[remote rejected] (failure)`
    "bad gateway",
    "gateway time",
    "too many requests",
    "rate limit",
    "maintenance",
    "no space left on device",
    "disk quota exceeded",
    "out of memory",
    "hung up unexpectedly",  # git: the connection dropped mid-push
    "unexpected disconnect",
    "early eof",
    "empty reply from server",
    "connection reset",
    "connection refused",
    "connection timed out",
    "could not resolve host",
)
# An HTTP status that says "later": 5xx, 429 Too Many Requests, 408 Request Timeout. git prints
# "RPC failed; HTTP 503" or "The requested URL returned error: 502".
TEMPORARY_STATUS = re.compile(r"\b(?:http|error|status|code)\b\W{0,3}(?:5\d\d|429|408)\b")
# A plain refusal: who may push where is not going to change by waiting.
REFUSAL_PHRASES = (
    "permission denied",
    "not authorized",
    "unauthorized",
    "access denied",
    "authentication failed",
    "terminal prompts disabled",  # git over HTTP(S) asked for a password nobody will type
    "forbidden",
    "not allowed",
)
# GitHub over HTTPS: "Permission to owner/repo.git denied to someone."
REFUSAL_STATUS = re.compile(r"\b(?:http|error|status|code)\b\W{0,3}(?:401|403)\b|\bpermission to \S+ denied")


def _temporary(text: str) -> bool:
    return any(p in text for p in TEMPORARY_PHRASES) or TEMPORARY_STATUS.search(text) is not None


def _refused(text: str) -> bool:
    return any(p in text for p in REFUSAL_PHRASES) or REFUSAL_STATUS.search(text) is not None


def push_with_lease(
    git: Git, *, remote: str, commit: str, branch: str, expected: str, timeout: float
) -> PushResult:
    """Push `commit` to `branch` only if the remote still has `expected` there ("": no branch yet),
    DESIGN §6.4.

    Never forced, in any spelling: that would silently disable the lease, and a base someone rewound
    would get its removed commits back. A lease alone still lets a matching push replace the branch
    with a commit that does not build on it, so that is refused here before anything is sent. On
    success the remote-tracking ref follows, as a fetch would have moved it.
    """
    ref = f"refs/heads/{branch}"
    update = RefUpdate(ref, commit, expected or None)
    return _push_building_on(git, remote=remote, updates=[update], atomic=False, timeout=timeout).results[ref]


def classify_push(returncode: int, stdout: str, stderr: str, ref: str) -> PushResult:
    """Read `git push --porcelain`: one `<flag>\\t<from>:<to>\\t<summary>` line per ref (git-push(1)),
    and what the remote said.

    A race or a temporary refusal is tried again with backoff; a named policy or a plain refusal
    blocks at once; a hook that declines without saying why is taken at its word (permanent).
    """
    line = _porcelain_line(stdout, ref)
    remote_says = _remote_says(stderr)
    if line is not None:
        flag, _, summary = line.split("\t", 2)
        summary = summary.strip()
        if flag != "!" and returncode == 0:
            return PushResult(PushStatus.OK, summary)
        if flag == "!":
            detail = f"{summary}" + (f": {remote_says}" if remote_says else "")
            return PushResult(_verdict(summary, remote_says), detail)
    # No verdict for our ref: the push never got that far (network, DNS, a proxy, a remote that hung up).
    lowered = stderr.lower()
    refused = not _temporary(lowered) and (_refused(lowered) or any(p in lowered for p in POLICY_PHRASES))
    return PushResult(PushStatus.PERMANENT if refused else PushStatus.TRANSPORT, _last_line(stderr))


def _remote_says(stderr: str) -> str:
    """The `remote:` lines of a push's stderr (a server's hook speaks there), joined."""
    return " ".join(m.removeprefix("remote:").strip() for m in stderr.splitlines() if m.startswith("remote:"))


def _verdict(summary: str, remote_says: str) -> PushStatus:
    """What a `!` line and the remote's words mean, in the order of the phrase lists above."""
    reason = summary.lower()
    said = f"{reason} {remote_says.lower()}"
    if any(p in reason for p in RACE_PHRASES):
        return PushStatus.RACE
    if any(p in said for p in POLICY_PHRASES):
        return PushStatus.PERMANENT
    if _temporary(said):
        return PushStatus.TRANSPORT  # the server's trouble, not ours: backed off like a race
    if _refused(said) or summary.startswith("[remote rejected]"):
        return PushStatus.PERMANENT
    return PushStatus.RACE


LS_REMOTE_TIMEOUT_S = 30.0


def ls_remote_listing(
    cwd: str | Path, remote: str, patterns: Sequence[str], *, timeout: float = LS_REMOTE_TIMEOUT_S
) -> dict[str, str] | None:
    """The refs on `remote` matching `patterns` (ref -> sha) in one `git ls-remote`, with `subprocess`
    alone (no sh: the idle check of a tick that may have nothing to do); None when the remote cannot
    say, or has no ref matching any pattern."""
    try:
        done = subprocess.run(
            ["git", "ls-remote", "--exit-code", remote, *patterns],
            cwd=cwd,
            env=git_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    listing = {}
    for line in done.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if sha and ref:
            listing[ref] = sha
    return listing


# --- several refs in one push: claims, shared task facts, and the fenced landing -------------------
#
# The claims of ralph.claims are refs under refs/ralph/ on the remote, changed only by pushes that name
# every ref with its own lease, never forced: a ref is created only if absent (an empty lease), changed
# or deleted only if it still holds what the pusher last saw. `--atomic` makes the landing one
# transaction: the base moves and the landed tasks' claims go, or nothing changes.


class RefUpdate(NamedTuple):
    """One ref of a push: `new` None deletes it; `expected` None means it must not exist yet."""

    ref: str
    new: str | None
    expected: str | None

    @property
    def refspec(self) -> str:
        return f"{self.new or ''}:{self.ref}"

    @property
    def lease(self) -> str:
        """`<ref>:<expected>`; an empty expected value means "must not exist" (git-push(1))."""
        return f"{self.ref}:{self.expected or ''}"


class MultiPush(NamedTuple):
    """What the remote said about each ref of one push.

    `rejected` names the refs refused for a reason of their own (a stale lease, a hook, a policy), not
    the ones an atomic push only took down with them: a lost claim is told from a lost base race by
    which ref it names.
    """

    status: PushStatus
    message: str
    results: Mapping[str, PushResult]
    rejected: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is PushStatus.OK


# An atomic push names every ref it did not update; only these words say a ref fell with another.
_ATOMIC_BYSTANDER = "atomic"
_SEVERITY = {PushStatus.OK: 0, PushStatus.RACE: 1, PushStatus.TRANSPORT: 2, PushStatus.PERMANENT: 3}


def push_refs(
    git: Git, *, remote: str, updates: Sequence[RefUpdate], atomic: bool, timeout: float
) -> MultiPush:
    """Push every update in one `git push`, each under its own lease; with `atomic`, all or none.

    Without `atomic` each ref stands alone (one refused ref leaves the others updated), which is what
    a refresh of many independent claims wants: one round trip, and a verdict per ref.
    """
    if not updates:
        return MultiPush(PushStatus.OK, "nothing to push", {})
    mode = ("--atomic",) if atomic else ()
    args = ("push", "--porcelain", *mode, *(f"--force-with-lease={u.lease}" for u in updates))
    args += (remote, *(u.refspec for u in updates))
    try:
        result = git.run(*args, ok=tuple(range(256)), timeout=timeout)
    except GitError as e:  # a timeout: the remote did not answer in time
        down = PushResult(PushStatus.TRANSPORT, str(e))
        return MultiPush(PushStatus.TRANSPORT, str(e), {u.ref: down for u in updates})
    results = {u.ref: _ref_verdict(result, u.ref) for u in updates}
    refused = [ref for ref, r in results.items() if r.status is not PushStatus.OK]
    if not refused:
        return MultiPush(PushStatus.OK, "ok", results)
    culprits = tuple(
        ref
        for ref in refused
        if _porcelain_line(result.stdout, ref) is not None and _ATOMIC_BYSTANDER not in results[ref].message
    )
    if not culprits:
        # The server's transaction failed as a whole: only its words name the ref (git: "cannot lock
        # ref '<ref>': reference already exists" when another push created it first).
        said = _remote_says(result.stderr)
        culprits = tuple(ref for ref in refused if f"'{ref}'" in said)
        if culprits and any(p in said.lower() for p in RACE_PHRASES):
            lost = PushResult(PushStatus.RACE, said)
            results = {**results, **dict.fromkeys(culprits, lost)}
    worst = max((culprits or refused), key=lambda ref: _SEVERITY[results[ref].status])
    return MultiPush(results[worst].status, f"{worst}: {results[worst].message}", results, culprits)


def push_atomic(git: Git, *, remote: str, updates: Sequence[RefUpdate], timeout: float) -> MultiPush:
    """One transaction on the remote: every update applies, or none does (the fenced landing). Branches
    are guarded and followed as in push_with_lease."""
    return _push_building_on(git, remote=remote, updates=updates, atomic=True, timeout=timeout)


def _push_building_on(
    git: Git, *, remote: str, updates: Sequence[RefUpdate], atomic: bool, timeout: float
) -> MultiPush:
    """push_refs, but a branch update must build on the tip it leases (nothing is sent otherwise), and
    the remote-tracking refs of the branches the remote took follow, as a fetch would have moved them."""
    for u in updates:
        branch = u.ref.removeprefix("refs/heads/")
        if branch != u.ref and u.new and u.expected and not git.is_ancestor(u.expected, u.new):
            refused = PushResult(
                PushStatus.PERMANENT,
                f"{u.new[:10]} does not build on {u.expected[:10]}, the tip of {remote}/{branch}; "
                f"pushing it would remove commits from {branch}",
            )
            return MultiPush(PushStatus.PERMANENT, f"{u.ref}: {refused.message}", {u.ref: refused}, (u.ref,))
    pushed = push_refs(git, remote=remote, updates=updates, atomic=atomic, timeout=timeout)
    moved = [
        u
        for u in updates
        if u.ref.startswith("refs/heads/") and u.new and pushed.results[u.ref].status is PushStatus.OK
    ]
    if moved:
        lines = (f"update refs/remotes/{remote}/{u.ref.removeprefix('refs/heads/')} {u.new}\n" for u in moved)
        git.run("update-ref", "--stdin", input="".join(lines))
    return pushed


def _porcelain_line(stdout: str, ref: str) -> str | None:
    return next((lin for lin in stdout.splitlines() if lin[:1] in " +-*!=" and f":{ref}\t" in lin), None)


def _ref_verdict(result: Result, ref: str) -> PushResult:
    """One ref's verdict in a push of several: a ref the remote updated (or already had) is OK even
    when another ref made git exit non-zero."""
    line = _porcelain_line(result.stdout, ref)
    if line is not None and not line.startswith("!"):
        return PushResult(PushStatus.OK, line.split("\t", 2)[-1].strip())
    return classify_push(result.returncode, result.stdout, result.stderr, ref)


def ls_remote_refs(
    git: Git, remote: str, names: Sequence[str], *, timeout: float, exact: bool = False
) -> dict[str, str]:
    """The refs on `remote` under any of the prefixes `names` (each ending in '/'), or with `exact`
    the refs named exactly, with their shas: one round trip.

    ls-remote matches its patterns against the tail of a name (refs/heads/x/refs/ralph/... too), so
    only the names that start with a prefix (or equal a name) are kept.
    """
    patterns = names if exact else [f"{p}*" for p in names]
    listing = git.run("ls-remote", remote, *patterns, timeout=timeout).out
    refs: dict[str, str] = {}
    for line in listing.splitlines():
        sha, _, ref = line.partition("\t")
        if (ref in names) if exact else ref.startswith(tuple(names)):
            refs[ref] = sha
    return refs


def fetch_objects(git: Git, remote: str, refs: Sequence[str], *, timeout: float) -> None:
    """Bring the commits `refs` name on `remote` into the object store, writing no ref at all (a
    refspec without a destination), so nothing local ever has to be forced to follow a rewritten ref."""
    if refs:
        git.run("fetch", "--no-tags", "--no-write-fetch-head", remote, *refs, timeout=timeout)


def cat_blobs(git: Git, specs: Sequence[str], *, limit: int | None = None) -> dict[str, bytes]:
    """The contents of the blobs `specs` name (`<commit>:<path>`), one git call for all; a spec this
    repository cannot resolve, or a blob larger than `limit` bytes, is left out."""
    if not specs:
        return {}
    out = git.run("cat-file", "--batch", input="".join(f"{spec}\n" for spec in specs)).data
    found: dict[str, bytes] = {}
    pos = 0
    for spec in specs:
        eol = out.index(b"\n", pos)
        header = out[pos:eol].decode(errors="replace")
        pos = eol + 1
        if header.endswith((" missing", " ambiguous")):
            continue
        _, kind, size = header.rsplit(" ", 2)
        if kind == "blob" and (limit is None or int(size) <= limit):
            found[spec] = out[pos : pos + int(size)]
        pos += int(size) + 1  # the content, then a newline
    return found


class TreeEntry(NamedTuple):
    """One file of a tree diff's newer side (`git diff-tree -r`): its status (A, M, T or D), mode and
    object, and its path as git stores it (bytes: an agent may name a file anything)."""

    status: str
    mode: str
    sha: str
    path: bytes


def tree_diffs(git: Git, pairs: Sequence[tuple[str, str]]) -> list[list[TreeEntry]]:
    """What changed from the first tree of each pair to the second, file by file (no rename
    detection): one `git diff-tree --stdin` for all of them."""
    if not pairs:
        return []
    lines = "".join(f"{a} {b}\n" for a, b in pairs)
    # --ignore-submodules=none: an `ignore = all` in .gitmodules or the config would hide a bump.
    args = ("diff-tree", "--stdin", "-r", "-z", "--no-renames", "--ignore-submodules=none")
    data = git.run(*args, input=lines).data
    diffs: list[list[TreeEntry]] = []
    at = 0
    while at < len(data):
        if data[at : at + 1] != b":":  # a pair's header, `<tree> <tree>\n`: the next pair starts
            at = data.index(b"\n", at) + 1
            diffs.append([])
            continue
        meta_end = data.index(b"\0", at)
        path_end = data.index(b"\0", meta_end + 1)
        _, mode, _, sha, status = data[at + 1 : meta_end].decode().split(" ")
        diffs[-1].append(TreeEntry(status, mode, sha, data[meta_end + 1 : path_end]))
        at = path_end + 1
    if len(diffs) != len(pairs):
        raise GitError(f"git diff-tree answered {len(diffs)} of {len(pairs)} pairs", argv=("diff-tree",))
    return diffs


def _quoted(path: bytes) -> bytes:
    """`path` as fast-import reads a quoted path (C style): whatever bytes it holds come through."""
    out = bytearray(b'"')
    for byte in path:
        if byte in (0x22, 0x5C):
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte == 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b'"')


class NewCommit(NamedTuple):
    """A commit of small files, written without a work tree or an index: parentless on an empty tree
    unless told otherwise."""

    files: Mapping[str, bytes]  # path -> content; plain names, no spaces
    message: str
    when: datetime
    parent: str | int | None = None  # a commit, or the index of an earlier one in the same write_commits
    tree: str | None = None  # the tree `files` change (default: the empty tree)
    author: str | None = None  # `Name <email> <seconds> <zone>` (`git var`); default: ralph, at `when`
    committer: str | None = None
    entries: Sequence[TreeEntry] = ()  # objects already in the repository, put at their paths


def object_names(git: Git, specs: Sequence[str], *, kind: str | None = None) -> dict[str, str]:
    """The object each of `specs` names (`<commit>^{tree}`, `<commit>:<path>`): one git call for all,
    reading no contents; a spec that names nothing (or, with `kind`, an object of another type: a
    tree where a file was looked for) is left out."""
    if not specs:
        return {}
    asked = "".join(f"{spec}\n" for spec in specs)
    out = git.run("cat-file", "--batch-check=%(objectname) %(objecttype)", input=asked).out
    found: dict[str, str] = {}
    for spec, line in zip(specs, out.splitlines(), strict=True):
        name, _, got = line.rpartition(" ")  # `<spec> missing` and `<spec> ambiguous` name no type
        if got in ("commit", "tree", "blob", "tag") and (kind is None or got == kind):
            found[spec] = name
    return found


# Who the metadata commits are by: not the person's identity, which the work's commits carry.
METADATA_IDENT = "ralph <ralph@localhost>"
# The branch name fast-import builds on; it is reset before the stream ends, so it is never written.
_SCRATCH_BRANCH = "refs/ralph/fast-import"


def write_commits(git: Git, commits: Sequence[NewCommit]) -> list[str]:
    """Write `commits` (blobs, trees, commits) in one `git fast-import`; their shas, in order."""
    if not commits:
        return []
    stream: list[bytes] = []
    mark = 0
    marks: list[int] = []
    for commit in commits:
        if commit.parent is None:
            stream.append(f"reset {_SCRATCH_BRANCH}\n".encode())  # no parent: a new branch each time
        blobs: list[tuple[str, int]] = []
        for path, data in commit.files.items():
            mark += 1
            blobs.append((path, mark))
            stream += [f"blob\nmark :{mark}\ndata {len(data)}\n".encode(), data, b"\n"]
        mark += 1
        message = commit.message.encode()
        when = int(commit.when.timestamp())
        marks.append(mark)
        parent = commit.parent
        ralph = f"{METADATA_IDENT} {when} +0000"
        author = f"author {commit.author}\n" if commit.author else ""
        committer = commit.committer or ralph
        stream += [
            f"commit {_SCRATCH_BRANCH}\nmark :{mark}\n{author}committer {committer}\n".encode(),
            f"data {len(message)}\n".encode(),
            message,
            b"\n",
            *([f"from :{marks[parent]}\n".encode()] if isinstance(parent, int) else []),
            *([f"from {parent}\n".encode()] if isinstance(parent, str) else []),
            *([f'M 040000 {commit.tree} ""\n'.encode()] if commit.tree else []),  # the whole root tree
            *(f"M 100644 :{blob} {path}\n".encode() for path, blob in blobs),
            *(b"M %s %s %s\n" % (e.mode.encode(), e.sha.encode(), _quoted(e.path)) for e in commit.entries),
            f"get-mark :{mark}\n".encode(),
        ]
    stream.append(f"reset {_SCRATCH_BRANCH}\ndone\n".encode())
    # core.ignorecase (macOS, Windows) would make fast-import take `readme` for an existing `README`.
    args = ("-c", "core.ignorecase=false", "fast-import", "--quiet", "--done")
    out = git.run(*args, input=b"".join(stream)).out.split()
    if len(out) != len(commits):
        raise GitError(f"git fast-import wrote {len(out)} commits for {len(commits)}", argv=("fast-import",))
    return out


class LocalRef(NamedTuple):
    sha: str
    committed: datetime | None  # the commit's committer date (None: the ref names no commit)


def local_refs(git: Git, prefix: str) -> dict[str, LocalRef]:
    """The refs of this repository under `prefix`: one for-each-ref."""
    listing = git.run("for-each-ref", "--format=%(objectname) %(committerdate:unix) %(refname)", prefix).out
    refs: dict[str, LocalRef] = {}
    for line in listing.splitlines():
        sha, stamp, ref = line.split(" ", 2)
        refs[ref] = LocalRef(sha, datetime.fromtimestamp(int(stamp), UTC) if stamp.isdigit() else None)
    return refs


def update_refs(git: Git, updates: Mapping[str, str | None]) -> None:
    """Set (or, for None, delete) local refs in one transaction."""
    if updates:
        lines = "".join(f"update {ref} {sha}\n" if sha else f"delete {ref}\n" for ref, sha in updates.items())
        git.run("update-ref", "--stdin", input=lines)
