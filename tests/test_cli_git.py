"""ralph/git.py, the boundary every command's git call goes through: errors, timeouts, latency."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ralph.errors import GitError, PreflightError
from ralph.git import Git, find_repository


def test_a_failing_git_command_is_a_git_error_with_its_exit_code_and_stderr(repo: Path) -> None:
    with pytest.raises(GitError) as caught:
        Git(repo).run("rev-parse", "--verify", "no-such-branch")
    error = caught.value
    assert error.returncode == 128
    assert error.argv == ("rev-parse", "--verify", "no-such-branch")
    assert str(error) == (
        f"`git rev-parse --verify no-such-branch` failed in {repo} (exit 128): "
        "fatal: Needed a single revision"
    )


def test_ok_codes_are_results_not_errors(repo: Path) -> None:
    assert Git(repo).run("check-ignore", "-q", "--", "anything", ok=(0, 1)).returncode == 1


def test_input_reaches_git_on_stdin(repo: Path) -> None:
    # `git hash-object` of "hello\n" is a fixed, well-known blob id.
    result = Git(repo).run("hash-object", "--stdin", input="hello\n")
    assert result.out == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_a_git_call_that_outlives_its_timeout_is_killed_and_reported(repo: Path) -> None:
    started = time.monotonic()
    with pytest.raises(GitError, match=r"^`git -c 'alias.nap=!sleep 30' nap` timed out after 0.3s in "):
        Git(repo).run("-c", "alias.nap=!sleep 30", "nap", timeout=0.3)
    # git is killed at 0.3 s; sh then gives the orphaned `sleep`, which holds the output pipe, 2 s more.
    assert time.monotonic() - started < 10


def test_a_git_call_does_not_pay_a_fixed_tenth_of_a_second(repo: Path) -> None:
    # sh's own `_timeout` watchdog polled every 0.1 s and every call waited for it: >= 100 ms each,
    # a floor that made a tick (dozens of git calls) and this suite several times slower.
    git = Git(repo)
    fastest = float("inf")
    for _ in range(10):
        started = time.perf_counter()
        git.run("rev-parse", "HEAD")
        fastest = min(fastest, time.perf_counter() - started)
    assert fastest < 0.05


def test_git_in_a_missing_directory_raises_git_error_not_an_sh_exception(tmp_path: Path) -> None:
    # git.py is the only place that may see sh's exceptions (style rule 5); a failed start is a GitError.
    with pytest.raises(GitError, match=r"^`git status` could not start in .*/missing: .*No such file or dir"):
        Git(tmp_path / "missing").run("status")


def test_find_repository_of_a_missing_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match=r"/missing is not a directory; run ralph in your checkout"):
        find_repository(tmp_path / "missing")


def test_find_repository_returns_the_top_of_the_work_tree(repo: Path) -> None:
    (repo / "a" / "b").mkdir(parents=True)
    assert find_repository(repo / "a" / "b") == repo
