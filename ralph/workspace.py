"""Workspaces: one git clone per task, where its agent works, and the checkouts the CI gate judges
(DESIGN §7).

A checkout is a clone of the control repository that borrows its objects through an alternate (read-only
inside the job's box: no inode is shared, so an agent that rewrites a file cannot corrupt ralph's
repository), has no remote at all (the base is a local ref, `origin/<base>`; ralph alone fetches and
pushes), and starts detached at one commit. Its `.git` is the agent's to change, so ralph treats it as
untrusted (reliability §6.5): its config and hooks are never given a chance to run. ralph reads from a
workspace only with a fetch into the control repository (`file://`, which runs none of the clone's
hooks or config), commits the agent's leftovers through a git directory of its own, and replaces a
workspace instead of resetting it in place.

Checkouts are made by the job that uses them (ralph.job, outside the box, before the command starts),
so a tick never waits on a clone or on `hooks.after_create`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from shutil import copy2

from ralph.crash import crashpoint
from ralph.errors import GitError, RalphError
from ralph.files import force_rmtree, read_regular, scratch_dir
from ralph.git import UNTRUSTED, Git
from ralph.markers import EXCLUDES, RUNTIME_PATHS
from ralph.paths import is_within

logger = logging.getLogger(__name__)

# For the few read-only or ref-only commands ralph still runs inside a workspace (rev-parse, update-ref,
# and the set-up of a clone nobody has touched yet): nothing the agent may have planted in its clone's
# config runs. Work-tree commands (add, checkout, reset, clean) are never run there at all: they read
# filter drivers (`filter.<x>.clean`/`smudge`) from the clone's config, and no `-c` can switch off
# drivers whose names only the agent knows.
ATTIC = "refs/ralph/attic"
INCOMING = "refs/ralph/incoming"  # the way in for a workspace's commits; never left behind

# Never copied into a workspace, whatever the allowlist says: git's own files, ralph's runtime (the
# workspaces themselves live there by default), and trees that are rebuilt, not copied.
_DENIED_TREES = ("node_modules", ".venv", "__pycache__", "target")

# When a hook does not exit on its own, how often we look.
_POLL_S = 0.05


class WorkspaceError(RalphError):
    """A workspace could not be created or prepared; the worker fails with this message."""


def ws_git(path: Path) -> _UntrustedGit:
    return _UntrustedGit(path)


class _UntrustedGit:
    """git in a workspace: every command carries the overrides in UNTRUSTED."""

    def __init__(self, path: Path) -> None:
        self._git = Git(path)

    def run(self, *args: str, ok: tuple[int, ...] = (0,), input: str | None = None) -> str:
        return self._git.run(*UNTRUSTED, *args, ok=ok, input=input).out

    def ok(self, *args: str) -> bool:
        return self._git.run(*UNTRUSTED, *args, ok=tuple(range(256))).returncode == 0


@dataclass(frozen=True)
class Setup:
    """What every checkout of a control checkout shares (computed once per tick)."""

    control: Path  # the control checkout's root
    base_branch: str
    copies: tuple[str, ...] = ()  # ignored files copied in from the control checkout (.env*, allowlist)

    def as_dict(self) -> dict[str, object]:
        return {"control": str(self.control), "base_branch": self.base_branch, "copies": list(self.copies)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> Setup:
        copies = raw.get("copies", [])
        assert isinstance(copies, list)
        return cls(
            control=Path(str(raw["control"])), base_branch=str(raw["base_branch"]), copies=tuple(copies)
        )


def is_valid(path: Path) -> bool:
    """A clone git can use: it has a HEAD with a tree and no half-finished rebase."""
    git_dir = path / ".git"
    if path.is_symlink() or not git_dir.is_dir():
        return False
    if (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists():
        return False
    try:
        return ws_git(path).ok("rev-parse", "--verify", "--quiet", "HEAD^{tree}")
    except GitError:
        return False


def prepare(
    path: Path, *, setup: Setup, commit: str, base_sha: str, files: Mapping[str, bytes] | None = None
) -> None:
    """Make `path` a new checkout at `commit`, with `origin/<base>` at `base_sha`.

    `path` must not exist: whatever an earlier attempt left there is saved to the attic and removed
    by the tick before (`remove`). An existing clone is never reset in place: its config, hooks,
    attributes and excludes are the previous agent's, and `checkout`/`reset`/`clean` there would run
    its filter drivers with ralph's privileges. A half-made checkout is removed.
    """
    _refuse_control(path, setup.control)
    if path.is_symlink() or path.exists():
        raise WorkspaceError(f"{path} already exists; it must be removed (its work saved) first")
    with provisional(path):
        _clone(path, setup=setup, commit=commit, base_sha=base_sha)
        _copy_ignored_files(path, setup)
        for rel, data in (files or {}).items():
            # ralph's own runtime files (a CI-failure marker), excluded from every commit.
            if not rel.startswith(".ralph/cache/") or ".." in rel.split("/"):
                raise WorkspaceError(f"{rel}: only files under .ralph/cache/ are written into a checkout")
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def _refuse_control(path: Path, control: Path) -> None:
    # A misconfigured workspace root (say `..`) and an unlucky task id would otherwise make the
    # control checkout itself a "workspace" to be replaced or deleted.
    if is_within(control, path):
        raise WorkspaceError(
            f"refusing to use {path} as a workspace: it is or contains the control checkout {control}; "
            "set parallel.workspace_root to a directory of its own"
        )


def _clone(path: Path, *, setup: Setup, commit: str, base_sha: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    control = Git(setup.control)
    # --shared: objects through an alternate, never hard links. --origin: a global
    # clone.defaultRemoteName would otherwise name the remote something else.
    control.run(
        "clone",
        "--quiet",
        "--shared",
        "--no-checkout",
        "--origin",
        "origin",
        "--",
        str(setup.control),
        str(path),
    )
    ws = ws_git(path)
    # No remote at all: the agent has nothing to fetch from or push to (the base is a local ref), and
    # removing it drops the remote-tracking refs the clone made of the control repository's branches.
    ws.run("remote", "remove", "origin")
    tracking = f"refs/remotes/origin/{setup.base_branch}"
    listed = ws.run("for-each-ref", "--format=%(refname)", "refs/heads/").splitlines()
    commands = [f"delete {ref}" for ref in listed] + [f"update {tracking} {base_sha}"]
    ws.run("update-ref", "--stdin", input="".join(c + "\n" for c in commands))
    ws.run("checkout", "--quiet", "--detach", commit)
    _append_excludes(path, "runtime files, never committed", EXCLUDES)


def object_dirs(control: Path) -> list[str]:
    """The object directories a checkout of `control` reads through its alternate: the control
    repository's own, and any it borrows from in turn (bound read-only into a job's box)."""
    git = Git(control)
    first = Path(git.run("rev-parse", "--path-format=absolute", "--git-common-dir").out) / "objects"
    out: list[str] = []
    todo = [first]
    while todo and len(out) < 16:  # git itself follows at most 5 levels of alternates
        objects = todo.pop(0)
        if str(objects) in out:
            continue
        out.append(str(objects))
        alternates = read_regular(objects / "info" / "alternates") or b""
        for line in alternates.decode(errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                todo.append(Path(line) if os.path.isabs(line) else (objects / line).resolve())
    return out


def _append_excludes(path: Path, why: str, lines: Sequence[str]) -> None:
    exclude = path / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with open(exclude, "a", encoding="utf-8") as f:
        f.write(f"\n# ralph: {why}\n" + "".join(line + "\n" for line in lines))


def head(path: Path) -> str:
    return ws_git(path).run("rev-parse", "--verify", "HEAD")


# --- committing what the agent left --------------------------------------------------------------


def commit_leftovers(path: Path, *, message: str, identity: Mapping[str, str], scratch: Path) -> str:
    """Commit whatever the agent left uncommitted (never ralph's runtime files); return HEAD.

    `git add` in the workspace itself would run the clean filter of any driver the agent defined in
    its `.git/config` and named in `.git/info/attributes`. So the index is built by git running on a
    git directory of ralph's own (trusted config: global and system only) over the workspace's work
    tree and object store; the workspace is then only told its new HEAD and index. That git directory
    cannot see the control repository's config, so the commit's author and committer are passed in
    (`identity`, from Git.identity in the control repository).
    """
    ws_dot_git = path / ".git"
    object_format, parent, parent_tree = (
        ws_git(path).run("rev-parse", "--show-object-format", "HEAD", "HEAD^{tree}").split()
    )
    with scratch_dir(scratch, "commit-") as tmp:
        git_dir = tmp / "git"
        index = tmp / "index"
        Git(tmp).run("init", "--quiet", "--bare", f"--object-format={object_format}", str(git_dir))
        # The workspace's own excludes (ralph's runtime lines, the files copied in from the control
        # checkout, and whatever the agent added) still decide what is "left over".
        excludes = read_regular(ws_dot_git / "info" / "exclude") or b""
        (git_dir / "info").mkdir(exist_ok=True)
        (git_dir / "info" / "exclude").write_bytes(
            excludes + b"\n" + "".join(e + "\n" for e in EXCLUDES).encode()
        )
        env = {
            "GIT_DIR": str(git_dir),
            "GIT_WORK_TREE": str(path),
            "GIT_INDEX_FILE": str(index),
            "GIT_OBJECT_DIRECTORY": str(ws_dot_git / "objects"),
            **identity,
        }
        git = Git(path, env=env)
        # A split index or an untracked cache would write files beside our temporary index.
        safe = (*UNTRUSTED, "-c", "core.splitIndex=false", "-c", "core.untrackedCache=false")
        # Start from the workspace's index (its stat data spares re-reading every file); a copy that
        # git cannot use (split, or not an index at all) is replaced by HEAD's tree.
        current = read_regular(ws_dot_git / "index")
        staged = False
        if current is not None:
            index.write_bytes(current)
            # With the index's own mtime: git trusts an entry whose size and mtime match the file
            # unless it is not older than the index ("racily clean"). A copy made a second later
            # would take a same-size edit made in the checkout's second for no change at all.
            with contextlib.suppress(OSError):
                st = (ws_dot_git / "index").stat()
                os.utime(index, ns=(st.st_atime_ns, st.st_mtime_ns))
            try:
                git.run(*safe, "add", "--all")
                staged = True
            except GitError as e:
                logger.debug("%s: the workspace's index is of no use (%s); starting from HEAD", path, e)
        if not staged:
            index.unlink(missing_ok=True)
            git.run(*safe, "read-tree", parent)
            git.run(*safe, "add", "--all")
        # .git/info/exclude keeps ralph's runtime files out, unless the agent changed it or forced them in.
        git.run(
            *safe,
            "--literal-pathspecs",
            "rm",
            "-r",
            "-q",
            "--cached",
            "--ignore-unmatch",
            "--",
            *RUNTIME_PATHS,
        )
        crashpoint("mid-commit")
        tree = git.run(*safe, "write-tree").out
        if tree == parent_tree:
            return parent
        # --no-gpg-sign: nobody is there to unlock a key, and a waiting pinentry would hang the tick.
        commit = git.run("commit-tree", "--no-gpg-sign", tree, "-p", parent, "-m", message).out
        # HEAD moves only from the commit it was on (a lease); what `git commit` leaves is an index
        # matching the new HEAD, so the workspace gets the one just built.
        ws_git(path).run("update-ref", "-m", "ralph: commit leftovers", "HEAD", commit, parent)
        _replace_file(ws_dot_git / "index", index.read_bytes())
    return commit


def _replace_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".ralph-tmp")
    tmp.unlink(missing_ok=True)
    with open(tmp, "xb") as f:
        f.write(data)
    os.replace(tmp, path)


# --- saving and removing -------------------------------------------------------------------------


def save_to_attic(path: Path, *, task_id: str, control: Path, base_ref: str) -> str | None:
    """Keep the workspace's HEAD in the control repository if it holds commits `base_ref` lacks.

    Returns the ref it was saved as (`refs/ralph/attic/<TASK>-<n>`, or the existing one already
    holding that commit), or None when there was nothing to keep. The fetch runs in the control
    repository over `file://`: none of the clone's hooks or configuration run.
    """
    if path.is_symlink() or not (path / ".git").is_dir():
        return None
    git = Git(control)
    try:
        ws_head = import_commit(git, path, task_id=task_id, rev="HEAD")
    except GitError as e:
        if "couldn't find remote ref HEAD" in e.stderr:
            return None  # an unborn or broken HEAD: there is no commit to keep
        logger.warning("%s: could not save the workspace's commits before removing it: %s", task_id, e)
        raise WorkspaceError(f"{task_id}: could not save the work in {path} before removing it: {e}") from e
    if git.is_ancestor(ws_head, base_ref):
        return None
    prefix = f"{ATTIC}/{task_id}-"
    numbered: dict[int, str] = {}
    listing = git.run("for-each-ref", "--format=%(objectname) %(refname)", f"{prefix}*").out
    for line in listing.splitlines():
        sha, ref = line.split(" ", 1)
        suffix = ref[len(prefix) :]
        # `RQ-1-*` also matches the refs of a task named `RQ-1-b`: only `<TASK>-<n>` is ours.
        if suffix.isdigit():
            if sha == ws_head:
                return ref  # saved already (an earlier removal that did not finish)
            numbered[int(suffix)] = ref
    ref = f"{prefix}{max(numbered, default=0) + 1}"
    git.run("update-ref", ref, ws_head, "")  # "" as old value: create only, never overwrite
    logger.info("%s: saved unlanded work %s as %s", task_id, ws_head[:10], ref)
    return ref


def import_commit(git: Git, path: Path, *, task_id: str, rev: str) -> str:
    """Fetch `rev` (a name or a sha) of the workspace at `path` into the control repository; its sha.

    Over `file://`, in the control repository: none of the clone's hooks or configuration run with
    ralph's credentials. The objects stay; the ref they came in by does not.
    """
    incoming = f"{INCOMING}/{task_id}"
    # A killed run may have left the ref: drop it, so that the fetch creates it and needs no force.
    git.run("update-ref", "-d", incoming)
    try:
        git.run(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", f"file://{path}", f"{rev}:{incoming}"
        )
        crashpoint("mid-import")
        return git.run("rev-parse", "--verify", f"{incoming}^{{commit}}").out
    finally:
        git.run("update-ref", "-d", incoming)


def remove(path: Path, *, task_id: str, control: Path, base_ref: str, save: bool = True) -> str | None:
    """Delete a workspace after saving any unlanded commits; returns the attic ref if one was made.

    If the commits cannot be saved, the workspace is kept and WorkspaceError is raised. `save=False`
    is for a workspace whose work has just landed: there is nothing to keep, and nothing to ask.
    """
    _refuse_control(path, control)
    if path.is_symlink():
        # Something replaced the workspace with a link: remove the link, never what it points at.
        path.unlink()
        return None
    if not path.exists():
        return None
    ref = save_to_attic(path, task_id=task_id, control=control, base_ref=base_ref) if save else None
    force_rmtree(path)
    return ref


@contextlib.contextmanager
def provisional(path: Path) -> Iterator[None]:
    """Remove the workspace being made at `path` if the step making it fails: it holds no agent's work
    yet (prepare has saved and removed any older one first)."""
    try:
        yield
    except BaseException:
        if path.exists() or path.is_symlink():
            try:
                if path.is_symlink():
                    path.unlink()
                else:
                    force_rmtree(path)
            except OSError as e:
                logger.warning("could not remove the half-made workspace %s: %s", path, e)
        raise


# --- ignored files: .env* and the allowlist -------------------------------------------------------


def _copy_ignored_files(path: Path, setup: Setup) -> None:
    copied = []
    for rel in setup.copies:
        src = setup.control / rel
        dst = path / rel
        problem = _path_problem(rel) or _source_problem(src, setup.control, path.parent)
        if problem:  # it changed since the tick listed it
            logger.warning("not copying %s: %s", rel, problem)
            continue
        if not is_within(dst.parent, path):
            logger.warning("not copying %s: it would land outside the workspace", rel)
            continue
        if dst.is_symlink() or dst.exists():
            # The commit has it: copying over it would write through a link, or make the control
            # checkout's local version look like the agent's change.
            logger.warning("not copying %s: the checkout already has it from its commit", rel)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        copy2(src, dst, follow_symlinks=False)
        copied.append(rel)
    if copied:
        # Ignored in the control checkout may not mean ignored in the clone (its .git/info/exclude, a
        # .gitignore not committed yet): a copied secret must never be swept into the agent's commit.
        _append_excludes(
            path,
            "copied from the control checkout, never committed",
            ["/" + escape_ignore(rel) for rel in copied],
        )


def escape_ignore(rel: str) -> str:
    """`rel` as a gitignore pattern matching exactly that path."""
    return "".join("\\" + c if c in "\\*?[]!# " else c for c in rel)


def ignored_files_to_copy(control: Path, allowlist: Sequence[str], *, workspace_root: Path) -> list[str]:
    """The control checkout's ignored `.env*` files and `allowlist` matches to copy into every checkout
    (relative paths); listed once per tick, not once per checkout."""
    root = control
    listing = (
        Git(root).run("ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory").stdout
    )
    chosen = [rel for rel in listing.split("\0") if rel and not rel.endswith("/") and _is_env_file(rel)]
    tracked: set[str] | None = None
    for pattern in allowlist:
        problem = _pattern_problem(pattern)
        if problem:
            logger.warning("parallel.ignored_file_allowlist: %r is refused (%s); skipped", pattern, problem)
            continue
        matches = sorted(p for p in root.glob(pattern) if p.is_file() or p.is_symlink())
        if not matches:
            logger.warning("parallel.ignored_file_allowlist: %r matches no file; skipped", pattern)
            continue
        if tracked is None:
            tracked = set(filter(None, Git(root).run("ls-files", "-z").stdout.split("\0")))
        for match in matches:
            rel = match.relative_to(root).as_posix()
            if rel in tracked:
                # The clone has the base's version already; the control checkout's may be edited.
                logger.debug("allowlist %r: %s is tracked; the clone has it", pattern, rel)
                continue
            chosen.append(rel)
    out = []
    for rel in dict.fromkeys(chosen):
        src = root / rel
        problem = _path_problem(rel) or _source_problem(src, root, workspace_root)
        if problem:
            logger.warning("not copying %s: %s", rel, problem)
            continue
        out.append(rel)
    return out


def _is_env_file(rel: str) -> bool:
    name = PurePosixPath(rel).name
    return name == ".env" or fnmatch.fnmatch(name, ".env.*")


def _pattern_problem(pattern: str) -> str | None:
    """Why an allowlist entry may not be used, or None."""
    pure = PurePosixPath(pattern)
    if pure.is_absolute() or pattern.startswith("~"):
        return "it is an absolute path; entries are relative to the repository root"
    if ".." in pure.parts:
        return "it contains '..'; entries must stay inside the repository"
    if pattern.endswith("/") or pattern in (".", "") or pattern.startswith("./"):
        return "it is not a file path or glob relative to the repository root"
    return _path_problem(pattern)


def _path_problem(rel: str) -> str | None:
    """Why a path (or pattern) relative to the repository may not be copied, or None."""
    parts = PurePosixPath(rel).parts
    if "\n" in rel or "\r" in rel:
        return "its name contains a line break"  # it could not be written as one exclude line
    if ".git" in parts:
        return "it is inside a .git directory"
    if parts and parts[0] == ".ralph":
        return "it is under .ralph/, ralph's own files"
    denied = next((p for p in parts[:-1] if p in _DENIED_TREES), None)
    if denied:
        return f"it is under {denied}/, which is rebuilt in a workspace, not copied"
    return None


def _source_problem(src: Path, root: Path, workspace_root: Path) -> str | None:
    if src.is_symlink():
        if not is_within(src.resolve(), root):
            return "it is a symlink pointing outside the repository"
        return "it is a symlink; only regular files are copied"
    if not src.is_file():
        return "it is not a regular file"
    # A directory on the way that is a symlink (`linked/secret`) can point anywhere.
    if not is_within(src, root):
        return "it resolves to a file outside the repository"
    if is_within(src, workspace_root):
        return "it is inside the workspace root"
    return None
