"""Git.trees: the trees of many commits in one git call, kept for commits named by their full sha (a
train replays onto the same positions and bases again and again), never for names that can move."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import BASE, git

from ralph.errors import GitError
from ralph.git import Git


def commit_file(repo: Path, name: str) -> str:
    (repo / name).write_text(f"{name}\n")
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", name)
    return git(repo, "rev-parse", "HEAD")


def test_trees_of_commits_are_asked_once_and_kept_by_full_sha(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    second = commit_file(repo, "a.txt")
    ours = Git(repo)
    expected = [git(repo, "rev-parse", f"{c}^{{tree}}") for c in (first, second, first)]
    assert ours.trees([first, second, first]) == expected
    # Every object gone from the repository: what trees() met by full sha it still knows without git...
    shutil.rmtree(repo / ".git" / "objects")
    (repo / ".git" / "objects").mkdir()
    assert ours.trees([second, first]) == expected[1::-1]
    # ...and a commit it never met is asked for, and named when git cannot find it.
    with pytest.raises(GitError, match=f"{BASE} names no commit here"):
        ours.trees([BASE])


def test_a_name_that_moves_is_asked_again(repo: Path) -> None:
    ours = Git(repo)
    (before,) = ours.trees([BASE])
    after = commit_file(repo, "b.txt")
    assert ours.trees([BASE]) == [git(repo, "rev-parse", f"{after}^{{tree}}")] != [before]


def test_a_commit_made_here_needs_no_question(repo: Path) -> None:
    ours = Git(repo)
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    made = ours.run("commit-tree", "--no-gpg-sign", tree, "-m", "made").out
    ours.made(made, tree)
    shutil.rmtree(repo / ".git" / "objects")
    (repo / ".git" / "objects").mkdir()
    assert ours.trees([made]) == [tree]
