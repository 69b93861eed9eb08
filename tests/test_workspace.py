"""Workspaces (DESIGN §7): real clones of a real control repository, real hooks, real processes.

A workspace's `.git` belongs to the agent, so several tests plant hooks, `core.fsmonitor` and filter
drivers there that write a canary file, and prove ralph never gives them a chance to run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BASE, git

from ralph.markers import CI_FAILURE, CI_FAILURE_FALLBACK
from ralph.workspace import (
    Setup,
    WorkspaceError,
    commit_leftovers,
    ignored_files_to_copy,
    is_valid,
    object_dirs,
    prepare,
    provisional,
    remove,
    save_to_attic,
)

TASK = "RQ-0001"
BASE_REF = f"refs/remotes/origin/{BASE}"
IDENTITY = {"GIT_AUTHOR_NAME": "Ralph", "GIT_AUTHOR_EMAIL": "ralph@example.com"}
SCRATCH = Path(os.environ.get("TMPDIR", "/tmp")) / "ralph-test-scratch"
GITIGNORE = ".ralph/cache/\n.ralph/workspaces/\n.env\n.env.*\n*.key\n*.log\nsecrets/\nlinked\n"


@dataclass
class Repo:
    """The control checkout and its origin, with helpers to move the base and make workspaces."""

    origin: Path
    control: Path
    tmp: Path

    def setup(self, allowlist: tuple[str, ...] = ()) -> Setup:
        """What a tick hands every job: the ignored files to copy are listed once, here."""
        root = self.control / ".ralph" / "workspaces"
        copies = ignored_files_to_copy(self.control, allowlist, workspace_root=root)
        return Setup(control=self.control, base_branch=BASE, copies=tuple(copies))

    def base(self) -> str:
        return git(self.control, "rev-parse", f"origin/{BASE}")

    def ws(self, task_id: str = TASK) -> Path:
        return self.control / ".ralph" / "workspaces" / task_id

    def prepare(
        self, task_id: str = TASK, allowlist: tuple[str, ...] = (), commit: str | None = None
    ) -> Path:
        """As a tick and its job do: save and remove what is there, then make the checkout anew."""
        path = self.ws(task_id)
        remove(path, task_id=task_id, control=self.control, base_ref=BASE_REF)
        prepare(path, setup=self.setup(allowlist), commit=commit or self.base(), base_sha=self.base())
        return path

    def commit_to_origin(self, name: str, text: str) -> str:
        """Someone else pushes a commit to origin; the control repository fetches it (as a tick would)."""
        other = self.tmp / "other"
        if not other.exists():
            git(self.tmp, "clone", "-q", str(self.origin), str(other))
        git(other, "pull", "-q", "origin", BASE)
        (other / name).write_text(text)
        git(other, "add", name)
        git(other, "commit", "-q", "-m", f"add {name}")
        git(other, "push", "-q", "origin", f"HEAD:{BASE}")
        git(self.control, "fetch", "-q", "origin")
        return self.base()

    def commit_and_push(self, message: str) -> None:
        git(self.control, "add", "-A")
        git(self.control, "commit", "-q", "-m", message)
        git(self.control, "push", "-q", "origin", f"HEAD:{BASE}")


@pytest.fixture
def repo(origin: Path, control: Path, tmp_path: Path) -> Repo:
    (control / ".gitignore").write_text(GITIGNORE)
    (control / "src").mkdir()
    (control / "src" / "app.py").write_text("print('app')\n")
    r = Repo(origin, control, tmp_path)
    r.commit_and_push("set up")
    return r


def agent_commit(ws: Path, name: str = "work.txt", text: str = "agent work\n") -> str:
    """What an agent does: change a file and commit it."""
    (ws / name).write_text(text)
    git(ws, "add", name)
    git(ws, "commit", "-q", "-m", f"agent: {name}")
    return git(ws, "rev-parse", "HEAD")


def attic(control: Path) -> dict[str, str]:
    out = git(control, "for-each-ref", "--format=%(refname) %(objectname)", "refs/ralph/")
    return dict(line.split(" ") for line in out.splitlines())


# --- a fresh workspace ------------------------------------------------------------------------------


def test_prepare_clones_the_control_repo_detached_at_the_base(repo: Repo) -> None:
    git(repo.control, "branch", "feature")  # a local branch the agent must not see as a remote one
    old_control_head = git(repo.control, "rev-parse", "HEAD")
    base = repo.commit_to_origin("news.txt", "new on origin\n")  # origin moved; control's main did not
    assert base != old_control_head

    ws = repo.prepare()

    assert git(ws, "rev-parse", "HEAD") == base
    assert git(ws, "symbolic-ref", "-q", "HEAD", check=False) == ""  # detached
    assert (ws / "news.txt").read_text() == "new on origin\n"
    assert git(ws, "remote") == ""  # no remote at all: the base is a local ref
    # Only the base, at the commit the tick fetched: no stale copies of the control's branches.
    refs = git(ws, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/", "refs/remotes/")
    assert refs == f"refs/remotes/origin/{BASE} {base}"
    assert git(ws, "status", "--porcelain") == ""
    assert is_valid(ws)


def test_the_workspace_names_no_remote_the_agent_could_push_to_or_fetch_from(repo: Repo) -> None:
    ws = repo.prepare()
    before = git(repo.origin, "for-each-ref", "--format=%(refname) %(objectname)")
    agent_commit(ws)
    for refspec in (f"HEAD:refs/heads/{BASE}", "HEAD:refs/heads/agent-branch"):
        pushed = subprocess.run(["git", "push", "origin", refspec], cwd=ws, capture_output=True, text=True)
        assert pushed.returncode != 0, pushed.stdout
    assert git(repo.origin, "for-each-ref", "--format=%(refname) %(objectname)") == before
    assert str(repo.origin) not in (ws / ".git" / "config").read_text()
    fetched = subprocess.run(["git", "fetch", "origin"], cwd=ws, capture_output=True, text=True)
    assert fetched.returncode != 0


def test_runtime_files_are_excluded_in_the_workspace(repo: Repo) -> None:
    ws = repo.prepare()
    exclude = (ws / ".git" / "info" / "exclude").read_text().splitlines()
    assert ".ralph/cache/" in exclude
    assert "/" + CI_FAILURE_FALLBACK in exclude
    (ws / CI_FAILURE).parent.mkdir(parents=True)
    (ws / CI_FAILURE).write_text("{}")
    (ws / ".ralph" / "cache" / "parallel").mkdir()
    (ws / ".ralph" / "cache" / "parallel" / "blocked_push.json").write_text("{}")
    (ws / CI_FAILURE_FALLBACK).write_text("{}")
    assert git(ws, "status", "--porcelain", "--untracked-files=all") == ""


def test_objects_are_borrowed_through_an_alternate_and_share_no_inode(repo: Repo) -> None:
    """An agent that rewrites a file in its clone must not be able to corrupt the control repository."""
    ws = repo.prepare()
    agent_commit(ws)
    control_inodes = {os.stat(p).st_ino for p in (repo.control / ".git").rglob("*") if p.is_file()}
    ws_inodes = {os.stat(p).st_ino for p in (ws / ".git").rglob("*") if p.is_file()}
    assert control_inodes.isdisjoint(ws_inodes)
    assert object_dirs(repo.control) == [str(repo.control / ".git" / "objects")]


def test_objects_made_later_in_the_control_repo_are_visible_without_a_fetch(repo: Repo) -> None:
    """Alternates, not a fetch (which would run under the agent's config), bring ralph's commits in."""
    ws = repo.prepare()
    alternates = ws / ".git" / "objects" / "info" / "alternates"
    assert alternates.read_text() == f"{repo.control / '.git' / 'objects'}\n"
    later = git(repo.control, "commit-tree", "-m", "made after the clone", f"{repo.base()}^{{tree}}")
    assert git(ws, "cat-file", "-t", later) == "commit"


def test_a_global_clone_default_remote_name_does_not_rename_origin(repo: Repo) -> None:
    with open(Path(os.environ["HOME"]) / ".gitconfig", "a") as f:
        f.write("[clone]\n\tdefaultRemoteName = upstream\n")
    ws = repo.prepare()
    assert git(ws, "remote") == ""
    assert git(ws, "rev-parse", f"origin/{BASE}") == repo.base()


# --- .env files and the allowlist -------------------------------------------------------------------


def test_ignored_env_files_are_copied_and_stay_ignored(repo: Repo) -> None:
    c = repo.control
    (c / "tracked").mkdir()
    (c / "tracked" / ".env").write_text("BASE\n")
    git(c, "add", "-f", "tracked/.env")
    repo.commit_and_push("a tracked .env")
    (c / "tracked" / ".env").write_text("EDITED IN CONTROL\n")  # a local edit: never copied
    (c / ".env").write_text("ROOT=1\n")
    (c / ".env.local").write_text("LOCAL=1\n")
    (c / "src" / ".env").write_text("SUB=1\n")
    (c / ".envrc").write_text("not an env file\n")

    ws = repo.prepare()

    assert (ws / ".env").read_text() == "ROOT=1\n"
    assert (ws / ".env.local").read_text() == "LOCAL=1\n"
    assert (ws / "src" / ".env").read_text() == "SUB=1\n"
    assert (ws / "tracked" / ".env").read_text() == "BASE\n"
    assert not (ws / ".envrc").exists()
    assert git(ws, "status", "--porcelain", "--untracked-files=all") == ""


def test_allowlisted_files_are_copied_but_tracked_ones_come_from_the_base(repo: Repo) -> None:
    c = repo.control
    (c / "config").mkdir()
    (c / "config" / "app.json").write_text('{"base": true}\n')
    repo.commit_and_push("tracked config")
    (c / "config" / "app.json").write_text('{"edited": "in control"}\n')
    (c / "config" / "local.json").write_text('{"local": true}\n')
    (c / ".git" / "info" / "exclude").write_text("config/local.json\n")  # ignored only here
    (c / "certs").mkdir()
    (c / "certs" / "server.key").write_text("KEY\n")
    (c / "secrets").mkdir()
    (c / "secrets" / "db.json").write_text("{}\n")

    ws = repo.prepare(allowlist=("certs/*.key", "secrets/*.json", "config/*.json"))

    assert (ws / "certs" / "server.key").read_text() == "KEY\n"
    assert (ws / "secrets" / "db.json").read_text() == "{}\n"
    assert (ws / "config" / "local.json").read_text() == '{"local": true}\n'
    assert (ws / "config" / "app.json").read_text() == '{"base": true}\n'
    # Ignored only by the control's own .git/info/exclude: the clone must ignore it too, or the
    # agent's commit would carry it to the base branch.
    assert git(ws, "status", "--porcelain", "--untracked-files=all") == ""
    (ws / "src" / "app.py").write_text("print('changed')\n")
    head = commit_leftovers(ws, message=f"{TASK}: change", identity=IDENTITY, scratch=SCRATCH)
    assert git(ws, "show", "--name-only", "--format=", head) == "src/app.py"


def test_unsafe_allowlist_entries_are_refused_with_a_warning(
    repo: Repo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    caplog.set_level(logging.WARNING)
    entries = ("../outside.txt", str(outside), ".git/config", "src/../../outside.txt", "nothing-*.txt")

    ws = repo.prepare(allowlist=entries)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "parallel.ignored_file_allowlist: '../outside.txt' is refused (it contains '..'; entries must "
        "stay inside the repository); skipped",
        f"parallel.ignored_file_allowlist: {str(outside)!r} is refused (it is an absolute path; entries "
        "are relative to the repository root); skipped",
        "parallel.ignored_file_allowlist: '.git/config' is refused (it is inside a .git directory); skipped",
        "parallel.ignored_file_allowlist: 'src/../../outside.txt' is refused (it contains '..'; entries "
        "must stay inside the repository); skipped",
        "parallel.ignored_file_allowlist: 'nothing-*.txt' matches no file; skipped",
    ]
    assert git(ws, "remote") == ""  # its .git/config is its own, not a copy of the control's
    assert not list(ws.rglob("outside.txt"))
    assert git(ws, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_glob_matching_git_files_copies_none_of_them(repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    ws = repo.prepare(allowlist=("*/config", "*/HEAD"))
    assert git(ws, "remote") == ""  # its .git/config is its own, not a copy of the control's
    assert git(ws, "rev-parse", "HEAD") == repo.base()
    warnings = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert "not copying .git/config: it is inside a .git directory" in warnings
    assert "not copying .git/HEAD: it is inside a .git directory" in warnings


def test_symlinks_out_of_the_repository_are_not_copied(
    repo: Repo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret\n")
    (repo.control / ".env.link").symlink_to(secret)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "ssh.key").write_text("private key\n")
    (repo.control / "linked").symlink_to(elsewhere, target_is_directory=True)
    caplog.set_level(logging.WARNING)

    ws = repo.prepare(allowlist=("linked/*.key",))

    assert not (ws / ".env.link").exists() and not (ws / ".env.link").is_symlink()
    assert not (ws / "linked").exists()
    warnings = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert "not copying .env.link: it is a symlink pointing outside the repository" in warnings
    assert "not copying linked/ssh.key: it resolves to a file outside the repository" in warnings


# --- reuse, replacement and the attic ---------------------------------------------------------------


def test_prepare_again_saves_unlanded_commits_to_the_attic_and_starts_clean(repo: Repo) -> None:
    ws = repo.prepare()
    first = agent_commit(ws)
    (ws / "scratch.txt").write_text("untracked\n")
    (ws / "build.log").write_text("ignored\n")
    (ws / ".ralph" / "cache").mkdir(parents=True)
    (ws / ".ralph" / "cache" / "junk").write_text("runtime\n")
    new_base = repo.commit_to_origin("moved.txt", "the base moved\n")

    repo.prepare()

    assert attic(repo.control) == {f"refs/ralph/attic/{TASK}-1": first}
    assert git(ws, "rev-parse", "HEAD") == new_base
    assert git(ws, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    assert not (ws / "scratch.txt").exists() and not (ws / "build.log").exists()
    assert not (ws / ".ralph").exists()

    second = agent_commit(ws, "other.txt")
    repo.prepare()
    assert attic(repo.control) == {f"refs/ralph/attic/{TASK}-1": first, f"refs/ralph/attic/{TASK}-2": second}
    assert git(ws, "rev-parse", "HEAD") == new_base


def test_a_workspace_with_nothing_unlanded_makes_no_attic_ref(repo: Repo) -> None:
    ws = repo.prepare()
    (ws / "scratch.txt").write_text("uncommitted only\n")
    repo.prepare()
    assert attic(repo.control) == {}
    assert git(ws, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_workspace_without_git_is_replaced(repo: Repo) -> None:
    ws = repo.ws()
    ws.mkdir(parents=True)
    (ws / "junk.txt").write_text("left by something\n")
    repo.prepare()
    assert is_valid(ws)
    assert not (ws / "junk.txt").exists()
    assert git(ws, "rev-parse", "HEAD") == repo.base()


def test_a_workspace_left_mid_rebase_is_replaced_and_its_work_kept(repo: Repo) -> None:
    ws = repo.prepare()
    work = agent_commit(ws)
    (ws / ".git" / "rebase-merge").mkdir()
    assert not is_valid(ws)
    repo.prepare()
    assert is_valid(ws)
    assert not (ws / ".git" / "rebase-merge").exists()
    assert attic(repo.control) == {f"refs/ralph/attic/{TASK}-1": work}


def test_saving_the_same_head_twice_makes_one_attic_ref(repo: Repo) -> None:
    ws = repo.prepare()
    work = agent_commit(ws)
    args = {"task_id": TASK, "control": repo.control, "base_ref": BASE_REF}
    assert save_to_attic(ws, **args) == f"refs/ralph/attic/{TASK}-1"  # type: ignore[arg-type]
    assert save_to_attic(ws, **args) == f"refs/ralph/attic/{TASK}-1"  # type: ignore[arg-type]
    assert attic(repo.control) == {f"refs/ralph/attic/{TASK}-1": work}


def test_attic_numbers_ignore_a_task_whose_id_extends_this_one(repo: Repo) -> None:
    git(repo.control, "update-ref", f"refs/ralph/attic/{TASK}-b-7", repo.base())
    ws = repo.prepare()
    work = agent_commit(ws)
    ref = save_to_attic(ws, task_id=TASK, control=repo.control, base_ref=BASE_REF)
    assert ref == f"refs/ralph/attic/{TASK}-1"
    assert attic(repo.control)[ref] == work


# --- an agent's planted config and hooks never run ---------------------------------------------------

CANARY_HOOKS = (
    "post-checkout",
    "reference-transaction",
    "pre-push",
    "pre-commit",
    "commit-msg",
    "post-commit",
    "post-index-change",
    "post-rewrite",
    "pre-auto-gc",
)


def plant(ws: Path, canary: Path) -> None:
    """Everything an agent could leave in its clone to run code when ralph uses git there."""
    payload = ws.parent / f"payload-{ws.name}.sh"
    payload.write_text(f'#!/bin/sh\necho "$0 $*" >> {canary}\ncat\n')
    payload.chmod(0o755)
    hooks = ws / ".git" / "hooks"
    custom = ws / ".git" / "my-hooks"
    custom.mkdir()
    for name in CANARY_HOOKS:
        for directory in (hooks, custom):
            (directory / name).write_text(f'#!/bin/sh\necho "hook {name}" >> {canary}\n')
            (directory / name).chmod(0o755)
    (ws / ".git" / "info").mkdir(exist_ok=True)
    (ws / ".git" / "info" / "attributes").write_text("* filter=canary diff=canary\n")
    for key, value in (
        ("core.fsmonitor", str(payload)),
        ("core.hooksPath", str(custom)),
        ("filter.canary.clean", str(payload)),
        ("filter.canary.smudge", str(payload)),
        ("diff.canary.textconv", str(payload)),
        ("diff.external", str(payload)),
        ("core.sshCommand", str(payload)),
    ):
        # Written directly: the test's own git must not trip the canary either.
        subprocess.run(["git", "config", "--file", str(ws / ".git" / "config"), key, value], check=True)


def test_save_remove_and_prepare_never_run_the_workspaces_hooks_or_config(repo: Repo, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    ws = repo.prepare()
    agent_commit(ws, "README.md", "rewritten by the agent\n")
    plant(ws, canary)
    ref = save_to_attic(ws, task_id=TASK, control=repo.control, base_ref=BASE_REF)
    assert ref == f"refs/ralph/attic/{TASK}-1"
    repo.commit_to_origin("moved.txt", "moved\n")
    repo.prepare()  # replaces the planted workspace: README.md goes back to the base's text
    assert not canary.exists(), canary.read_text()
    assert (ws / "README.md").read_text() == "hello\n"
    agent_commit(ws, "again.txt")
    plant(ws, canary)
    assert remove(ws, task_id=TASK, control=repo.control, base_ref=BASE_REF) == f"refs/ralph/attic/{TASK}-2"
    assert not canary.exists(), canary.read_text()
    assert not ws.exists()


def test_commit_leftovers_never_runs_the_workspaces_hooks_or_config(repo: Repo, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    ws = repo.prepare()
    base = git(ws, "rev-parse", "HEAD")
    (ws / "README.md").write_text("changed by the agent\n")
    (ws / "new.txt").write_text("new file\n")
    plant(ws, canary)
    head = commit_leftovers(ws, message=f"{TASK}: leftovers", identity=IDENTITY, scratch=SCRATCH)
    assert not canary.exists(), canary.read_text()
    assert head != base
    assert (
        git(repo.control, "--git-dir", str(ws / ".git"), "show", f"{head}:README.md")
        == "changed by the agent"
    )
    assert git(repo.control, "--git-dir", str(ws / ".git"), "log", "-1", "--format=%s %P", head) == (
        f"{TASK}: leftovers {base}"
    )


# --- commit_leftovers -------------------------------------------------------------------------------


def test_commit_leftovers_commits_untracked_modified_and_deleted_files(repo: Repo) -> None:
    ws = repo.prepare()
    base = git(ws, "rev-parse", "HEAD")
    (ws / "README.md").write_text("modified\n")
    (ws / "src" / "app.py").unlink()
    (ws / "docs").mkdir()
    (ws / "docs" / "new.md").write_text("untracked\n")
    (ws / "build.log").write_text("ignored by .gitignore\n")

    head = commit_leftovers(ws, message=f"{TASK}: Add the docs", identity=IDENTITY, scratch=SCRATCH)

    assert git(ws, "rev-parse", "HEAD") == head
    assert git(ws, "log", "-1", "--format=%s%n%P", head) == f"{TASK}: Add the docs\n{base}"
    # The identity given, over the environment's (the hermetic one names "Test Author").
    assert git(ws, "log", "-1", "--format=%an <%ae>", head) == "Ralph <ralph@example.com>"
    changes = git(ws, "diff", "--name-status", base, head).splitlines()
    assert changes == ["M\tREADME.md", "A\tdocs/new.md", "D\tsrc/app.py"]
    # What `git commit` leaves: an index matching HEAD, so the CI gate sees a clean tree.
    assert git(ws, "status", "--porcelain") == ""
    assert git(ws, "ls-files", "docs") == "docs/new.md"


def test_commit_leftovers_sees_a_same_size_edit_made_in_the_second_of_the_checkout(repo: Repo) -> None:
    """git trusts a file whose size and mtime (to the second) match its index entry, unless the entry is
    "racily clean": not older than the index file itself. A fast agent rewrote a file in place with
    the same size within the second the workspace was checked out; `git status` in the workspace sees
    it, and the copy of the index ralph works on must too: it keeps the index's own mtime."""
    ws = repo.prepare()
    base = git(ws, "rev-parse", "HEAD")
    readme = ws / "README.md"
    before = readme.stat()
    with open(readme, "r+b") as f:  # in place: the same inode, the same size
        f.write(readme.read_bytes().upper())
    for path in (readme, ws / ".git" / "index"):  # the edit and the index in the checkout's second
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    git(ws, "config", "--global", "core.trustctime", "false")  # the change time would give it away
    assert git(ws, "diff-files", "--name-only") == "README.md"  # git itself sees it (and writes nothing)
    time.sleep(1.1)  # ralph looks later: its copy of the index is written in another second

    head = commit_leftovers(ws, message=f"{TASK}: shout", identity=IDENTITY, scratch=SCRATCH)

    assert head != base
    assert git(ws, "show", f"{head}:README.md") == "HELLO"


def test_commit_leftovers_never_commits_runtime_files(repo: Repo) -> None:
    ws = repo.prepare()
    base = git(ws, "rev-parse", "HEAD")
    (ws / ".git" / "info" / "exclude").write_text("")  # the agent dropped ralph's exclude lines
    (ws / CI_FAILURE).parent.mkdir(parents=True)
    (ws / CI_FAILURE).write_text("{}")
    (ws / CI_FAILURE_FALLBACK).write_text("{}")
    (ws / ".ralph" / "cache" / "parallel").mkdir()
    (ws / ".ralph" / "cache" / "parallel" / "blocked_push.json").write_text("{}")
    git(ws, "add", "-f", ".ralph/cache/parallel/blocked_push.json", CI_FAILURE_FALLBACK)  # and forced some in
    (ws / "real.txt").write_text("the actual work\n")

    head = commit_leftovers(ws, message=f"{TASK}: work", identity=IDENTITY, scratch=SCRATCH)

    assert git(ws, "diff", "--name-only", base, head) == "real.txt"
    assert (ws / CI_FAILURE).exists() and (ws / CI_FAILURE_FALLBACK).exists()  # kept, just not committed


def test_commit_leftovers_with_nothing_to_commit_keeps_head(repo: Repo) -> None:
    ws = repo.prepare()
    base = git(ws, "rev-parse", "HEAD")
    (ws / ".ralph" / "cache").mkdir(parents=True)
    (ws / ".ralph" / "cache" / "note").write_text("runtime only\n")
    assert commit_leftovers(ws, message=f"{TASK}: nothing", identity=IDENTITY, scratch=SCRATCH) == base
    assert git(ws, "rev-parse", "HEAD") == base
    assert git(ws, "rev-list", "--count", "HEAD") == "2"


@pytest.mark.parametrize("damage", ["missing", "garbage", "symlink"])
def test_commit_leftovers_when_the_agent_broke_its_index(repo: Repo, tmp_path: Path, damage: str) -> None:
    ws = repo.prepare()
    base = git(ws, "rev-parse", "HEAD")
    index = ws / ".git" / "index"
    index.unlink()
    if damage == "garbage":
        index.write_bytes(b"not an index at all")
    elif damage == "symlink":
        elsewhere = tmp_path / "not-yours"
        elsewhere.write_bytes(b"a file the workspace may not read through a link")
        index.symlink_to(elsewhere)
    (ws / "README.md").write_text("modified\n")
    (ws / "new.txt").write_text("new\n")
    head = commit_leftovers(ws, message=f"{TASK}: work", identity=IDENTITY, scratch=SCRATCH)
    assert git(ws, "diff", "--name-status", base, head).splitlines() == ["M\tREADME.md", "A\tnew.txt"]
    assert git(ws, "status", "--porcelain") == ""
    assert not index.is_symlink()


def test_commit_leftovers_on_top_of_the_agents_own_commits(repo: Repo) -> None:
    ws = repo.prepare()
    own = agent_commit(ws)
    (ws / "extra.txt").write_text("forgot to commit\n")
    head = commit_leftovers(ws, message=f"{TASK}: leftovers", identity=IDENTITY, scratch=SCRATCH)
    assert git(ws, "rev-parse", f"{head}~1") == own
    assert git(ws, "diff", "--name-only", own, head) == "extra.txt"


def test_commit_leftovers_never_commits_env_files_ignored_only_in_the_control(repo: Repo) -> None:
    # This project's .gitignore does not mention .env; the person ignores theirs in .git/info/exclude.
    (repo.control / ".gitignore").write_text(".ralph/cache/\n.ralph/workspaces/\n")
    repo.commit_and_push("no .env in .gitignore")
    (repo.control / ".git" / "info" / "exclude").write_text(".env\n")
    (repo.control / ".env").write_text("SECRET=1\n")
    ws = repo.prepare()
    assert (ws / ".env").read_text() == "SECRET=1\n"
    (ws / "work.txt").write_text("work\n")
    head = commit_leftovers(ws, message=f"{TASK}: work", identity=IDENTITY, scratch=SCRATCH)
    assert git(ws, "ls-tree", "-r", "--name-only", head).splitlines() == [
        ".gitignore",
        "README.md",
        "src/app.py",
        "work.txt",
    ]


# --- provisional and remove -------------------------------------------------------------------------


def test_provisional_removes_the_workspace_when_the_step_fails(repo: Repo) -> None:
    ws = repo.prepare()
    with pytest.raises(RuntimeError, match="spawn failed"), provisional(ws):
        raise RuntimeError("spawn failed")
    assert not ws.exists()


def test_provisional_keeps_the_workspace_when_the_step_succeeds(repo: Repo) -> None:
    ws = repo.prepare()
    with provisional(ws):
        pass
    assert is_valid(ws)


def test_remove_saves_unlanded_work_then_deletes(repo: Repo) -> None:
    ws = repo.prepare()
    work = agent_commit(ws)
    ref = remove(ws, task_id=TASK, control=repo.control, base_ref=BASE_REF)
    assert ref == f"refs/ralph/attic/{TASK}-1"
    assert attic(repo.control) == {ref: work}
    assert not ws.exists()
    assert git(repo.control, "for-each-ref", "refs/ralph/incoming") == ""


def test_remove_deletes_read_only_files_and_directories(repo: Repo) -> None:
    ws = repo.prepare()
    (ws / "locked" / "deeper").mkdir(parents=True)
    (ws / "locked" / "deeper" / "file.txt").write_text("read-only\n")
    (ws / "sealed").mkdir()
    (ws / "sealed" / "inside.txt").write_text("unreadable directory\n")
    for path in sorted(ws.rglob("*"), reverse=True):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)
    (ws / "sealed").chmod(0)
    ws.chmod(0o555)
    assert remove(ws, task_id=TASK, control=repo.control, base_ref=BASE_REF) is None
    assert not ws.exists()


def test_remove_of_a_symlinked_workspace_removes_only_the_link(repo: Repo, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "data.txt").write_text("keep me\n")
    ws = repo.ws()
    ws.parent.mkdir(parents=True)
    ws.symlink_to(target, target_is_directory=True)
    assert remove(ws, task_id=TASK, control=repo.control, base_ref=BASE_REF) is None
    assert not ws.is_symlink() and not ws.exists()
    assert (target / "data.txt").read_text() == "keep me\n"


def test_remove_keeps_a_workspace_whose_work_cannot_be_saved(repo: Repo) -> None:
    ws = repo.prepare()
    work = agent_commit(ws)
    tree = git(ws, "rev-parse", f"{work}^{{tree}}")
    (ws / ".git" / "objects" / tree[:2] / tree[2:]).unlink()  # the commit's tree is gone
    with pytest.raises(WorkspaceError) as e:
        remove(ws, task_id=TASK, control=repo.control, base_ref=BASE_REF)
    assert str(e.value).startswith(f"{TASK}: could not save the work in {ws} before removing it: ")
    assert ws.is_dir() and (ws / "work.txt").exists()
    assert attic(repo.control) == {}


def test_the_control_checkout_is_never_a_workspace(repo: Repo) -> None:
    for path in (repo.control, repo.control.parent):
        with pytest.raises(WorkspaceError) as e:
            remove(path, task_id=TASK, control=repo.control, base_ref=BASE_REF)
        assert str(e.value) == (
            f"refusing to use {path} as a workspace: it is or contains the control checkout "
            f"{repo.control}; set parallel.workspace_root to a directory of its own"
        )
        with pytest.raises(WorkspaceError):
            prepare(path, setup=repo.setup(), commit=repo.base(), base_sha=repo.base())
    assert git(repo.control, "status", "--porcelain") == ""
    assert (repo.control / "src" / "app.py").exists()
