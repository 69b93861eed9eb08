"""Fixtures: a hermetic git environment, a bare `origin` and control clones. Real git, no mocks."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import ralph

if TYPE_CHECKING:
    from harness import Project

BASE = "main"


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """Run git in `cwd` for test set-up and assertions; return stdout without the trailing newline."""
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {result.stderr}")
    return result.stdout.rstrip("\n")


def commit_ignored_submodule(repo: Path, path: str, *, hidden_by: str = "gitmodules") -> str:
    """Commit a submodule at `path` (pointing at HEAD's commit, not checked out) that `git diff` is
    told to ignore (`ignore = all`), in .gitmodules or, with hidden_by="config", the repository's
    config; the new HEAD."""
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{git(repo, 'rev-parse', 'HEAD')},{path}")
    (repo / path).mkdir(parents=True)  # as a submodule not checked out is: an empty directory
    ignore = "\tignore = all\n" if hidden_by == "gitmodules" else ""
    (repo / ".gitmodules").write_text(f'[submodule "sub"]\n\tpath = {path}\n\turl = ./sub\n{ignore}')
    if hidden_by == "config":
        git(repo, "config", "submodule.sub.ignore", "all")
    git(repo, "add", ".gitmodules")
    git(repo, "commit", "-q", "-m", "a submodule")
    return git(repo, "rev-parse", "HEAD")


def bump_submodule(repo: Path, path: str, to: str) -> str:
    """Commit the submodule at `path` moved to commit `to`; the new HEAD."""
    git(repo, "update-index", "--cacheinfo", f"160000,{to},{path}")
    git(repo, "commit", "-q", "-m", f"bump {path}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(autouse=True)
def hermetic_seal(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate every test from the user's git config, home, clock-dependent git dates and RALPH_* env."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Committer")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "committer@example.com")
    monkeypatch.setenv("GIT_EDITOR", "false")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "file")
    for key in list(os.environ):
        if key.startswith("RALPH_") or key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
            monkeypatch.delenv(key)
    (home / ".gitconfig").write_text(
        "[init]\n\tdefaultBranch = main\n[user]\n\tname = Test\n\temail = test@example.com\n"
        "[commit]\n\tgpgsign = false\n[advice]\n\tdetachedHead = false\n"
    )
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare repository with one commit on `main`, playing the shared remote."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", BASE, str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(bare), str(seed))
    (seed / "README.md").write_text("hello\n")
    git(seed, "add", "README.md")
    git(seed, "commit", "-q", "-m", "initial commit")
    git(seed, "push", "-q", "origin", f"HEAD:{BASE}")
    return bare


@pytest.fixture
def clone(origin: Path, tmp_path: Path) -> Callable[[str], Path]:
    """A factory of working clones of `origin`; `clone("control")` is where ralph runs."""

    def make(name: str) -> Path:
        path = tmp_path / name
        git(tmp_path, "clone", "-q", str(origin), str(path))
        return path

    return make


@pytest.fixture
def control(clone: Callable[[str], Path]) -> Path:
    """The control checkout: a clone of `origin` on `main`."""
    return clone("control")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A plain repository with one commit and no remote, for tests that only need a work tree."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", BASE)
    git(path, "commit", "-q", "--allow-empty", "-m", "initial commit")
    return path


@pytest.fixture
def checkout(control: Path) -> Path:
    """The control clone after `ralph init` (nothing committed or pushed yet)."""
    result = ralph(control, "init")
    assert result.exit_code == 0, result.output
    return control


@pytest.fixture
def project(origin: Path, control: Path) -> Project:
    """The control clone set up for ticks with the scripted agent (tests/harness.py)."""
    # harness imports this module, so it is imported here, once this module is complete.
    from harness import make_project

    return make_project(origin, control)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The CLI replaces every root-logger handler and sets levels (ralph/log.py); put back what the
    test started with, and close the handlers the CLI opened (a --log-file is a real file)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    quieted = {name: logging.getLogger(name).level for name in ("sh", "filelock")}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.setLevel(level)
    root.handlers[:] = handlers
    for name, old in quieted.items():
        logging.getLogger(name).setLevel(old)
