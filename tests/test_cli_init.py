"""`ralph init`: what it creates, what it keeps, and what it refuses, through the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import git
from helpers import ralph

from ralph.config import load_config

NEXT = (
    'next: ralph task add "<what to do>", commit .ralph/ and .gitignore, push, '
    "then run `ralph run` from cron (README: Running on a schedule)"
)
CREATED_ALL = [
    "created .ralph/config.toml",
    "created .ralph/queue.json",
    "created .ralph/done.json",
    "added .ralph/cache/ to .gitignore",
    "added .ralph/workspaces/ to .gitignore",
    NEXT,
]
EMPTY_QUEUE = '{\n  "version": 1,\n  "tasks": []\n}\n'


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file outside .git, by relative path, with its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def ignored(checkout: Path, path: str) -> bool:
    """git's verdict: check-ignore exits 0 for an ignored path and 1 for one that is not."""
    result = subprocess.run(["git", "check-ignore", "-q", path], cwd=checkout)
    assert result.returncode in (0, 1), result
    return result.returncode == 0


def test_init_in_a_clone_creates_config_queue_done_and_ignores(control: Path) -> None:
    result = ralph(control, "init")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == CREATED_ALL
    assert result.stderr == ""

    config = load_config(control / ".ralph" / "config.toml")
    assert config.git.base_branch == "main"
    assert config.git.remote == "origin"
    assert config.agent.runner == "claude"
    assert config.agent.command == []
    assert (control / ".ralph" / "config.toml").read_text().startswith("# ralph configuration.")
    for name in ("queue.json", "done.json"):
        text = (control / ".ralph" / name).read_text()
        assert text == EMPTY_QUEUE
        assert json.loads(text) == {"version": 1, "tasks": []}
    assert (control / ".gitignore").read_text() == ".ralph/cache/\n.ralph/workspaces/\n"

    # What git now makes of it: the runtime dirs are ignored; the queue files are not.
    assert ignored(control, ".ralph/cache/parallel/state.json")
    assert ignored(control, ".ralph/workspaces/RQ-0001/x")
    assert not ignored(control, ".ralph/queue.json")
    assert not ignored(control, ".ralph/config.toml")
    untracked = git(control, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert untracked == [
        "?? .gitignore",
        "?? .ralph/config.toml",
        "?? .ralph/done.json",
        "?? .ralph/queue.json",
    ]


def test_base_branch_is_the_remotes_head_even_from_another_branch(control: Path) -> None:
    git(control, "checkout", "-q", "-b", "feature")
    assert ralph(control, "init").exit_code == 0
    assert load_config(control / ".ralph" / "config.toml").git.base_branch == "main"


def test_base_branch_without_a_remote_is_the_current_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "trunk")
    assert ralph(repo, "init").exit_code == 0
    assert load_config(repo / ".ralph" / "config.toml").git.base_branch == "trunk"


def test_base_option_is_respected(control: Path) -> None:
    assert ralph(control, "init", "--base", "release/2.x").exit_code == 0
    assert load_config(control / ".ralph" / "config.toml").git.base_branch == "release/2.x"


def test_runner_option_is_respected(control: Path) -> None:
    result = ralph(control, "init", "--runner", "codex")
    assert result.exit_code == 0
    config = load_config(control / ".ralph" / "config.toml")
    assert (config.agent.runner, config.agent.command) == ("codex", [])
    assert "placeholder" not in result.stdout


def test_runner_command_writes_a_placeholder_and_says_to_edit_it(control: Path) -> None:
    result = ralph(control, "init", "--runner", "command")
    assert result.exit_code == 0
    config = load_config(control / ".ralph" / "config.toml")
    assert config.agent.runner == "command"
    assert config.agent.command == ["/path/to/your-agent", "--prompt-file", "{prompt_file}"]
    assert "edit agent.command in .ralph/config.toml: it is a placeholder" in result.stdout.splitlines()


def test_unknown_runner_is_a_usage_error(control: Path) -> None:
    result = ralph(control, "init", "--runner", "copilot")
    assert result.exit_code == 2
    expected = "'copilot' is not one of 'claude', 'codex', 'gemini', 'opencode', 'aider', 'command'"
    assert expected in result.stderr
    assert not (control / ".ralph").exists()


def test_invalid_base_is_one_line_exit_1_and_creates_nothing(control: Path) -> None:
    # It used to escape as a pydantic ValidationError: exit 3, "a bug in ralph", with a traceback.
    before = snapshot(control)
    result = ralph(control, "init", "--base", "bad..name")
    assert result.exit_code == 1
    assert result.stderr == (
        "ralph: error: --base 'bad..name' is not a valid git branch name (git-check-ref-format(1)); "
        "pass --base BRANCH, e.g. --base main\n"
    )
    assert result.stdout == ""
    assert not (control / ".ralph").exists()
    assert snapshot(control) == before


def test_existing_gitignore_is_kept_and_a_missing_newline_added(control: Path) -> None:
    (control / ".gitignore").write_text("node_modules/\n*.pyc")
    assert ralph(control, "init").exit_code == 0
    assert (control / ".gitignore").read_text() == "node_modules/\n*.pyc\n.ralph/cache/\n.ralph/workspaces/\n"


def test_second_run_changes_no_byte_and_says_kept(control: Path) -> None:
    assert ralph(control, "init").exit_code == 0
    before = snapshot(control)
    result = ralph(control, "init")
    assert result.exit_code == 0
    assert snapshot(control) == before
    assert result.stdout.splitlines() == [
        "kept .ralph/config.toml (already there)",
        "kept .ralph/queue.json (already there)",
        "kept .ralph/done.json (already there)",
        "kept .ralph/cache/ ignored (already ignored)",
        "kept .ralph/workspaces/ ignored (already ignored)",
        NEXT,
    ]
    assert result.stderr == ""


def test_edited_files_are_never_overwritten(control: Path) -> None:
    assert ralph(control, "init").exit_code == 0
    config = control / ".ralph" / "config.toml"
    config.write_text("[parallel]\nworkers = 7\n")
    assert ralph(control, "task", "add", "Keep me").exit_code == 0
    before = snapshot(control)
    result = ralph(control, "init")
    assert result.exit_code == 0
    assert snapshot(control) == before
    assert load_config(config).parallel.workers == 7


def test_options_on_an_existing_config_warn_and_change_nothing(control: Path) -> None:
    assert ralph(control, "init").exit_code == 0
    before = snapshot(control)
    result = ralph(control, "init", "--runner", "command", "--base", "develop")
    assert result.exit_code == 0
    assert snapshot(control) == before
    assert result.stderr == (
        "ralph: warning: .ralph/config.toml already exists, so --runner/--base were not applied; "
        "edit the file to change them\n"
    )
    # It used to print "edit agent.command ...: it is a placeholder" about a file it had not written.
    assert "placeholder" not in result.stdout


def test_a_broader_gitignore_pattern_is_enough_and_init_warns_the_queue_is_ignored(control: Path) -> None:
    (control / ".gitignore").write_text(".ralph/\n")
    result = ralph(control, "init")
    assert result.exit_code == 0
    assert (control / ".gitignore").read_text() == ".ralph/\n"
    assert "kept .ralph/cache/ ignored (already ignored)" in result.stdout.splitlines()
    assert "kept .ralph/workspaces/ ignored (already ignored)" in result.stdout.splitlines()
    assert result.stderr == (
        "ralph: warning: git ignores .ralph/queue.json, but the queue must be committed and pushed; "
        "narrow the .gitignore pattern to .ralph/cache/ and .ralph/workspaces/\n"
    )


def test_an_entry_in_info_exclude_is_not_added_again(control: Path) -> None:
    exclude = control / ".git" / "info" / "exclude"
    exclude.write_text(exclude.read_text() + ".ralph/cache/\n")
    result = ralph(control, "init")
    assert result.exit_code == 0
    assert (control / ".gitignore").read_text() == ".ralph/workspaces/\n"
    assert "kept .ralph/cache/ ignored (already ignored)" in result.stdout.splitlines()
    assert result.stderr == ""


def test_init_from_a_subdirectory_sets_up_the_repository_root(control: Path) -> None:
    sub = control / "src" / "pkg"
    sub.mkdir(parents=True)
    assert ralph(sub, "init").exit_code == 0
    assert (control / ".ralph" / "config.toml").is_file()
    assert not (sub / ".ralph").exists()


def test_rust_ralph_jsonc_queue_is_kept_and_no_json_twin_made(control: Path) -> None:
    (control / ".ralph").mkdir()
    jsonc = control / ".ralph" / "queue.jsonc"
    jsonc.write_text('{"version": 1, "tasks": [], // from the Rust ralph\n}\n')
    result = ralph(control, "init")
    assert result.exit_code == 0
    assert "kept .ralph/queue.jsonc (already there)" in result.stdout.splitlines()
    assert not (control / ".ralph" / "queue.json").exists()
    assert jsonc.read_text() == '{"version": 1, "tasks": [], // from the Rust ralph\n}\n'


def test_outside_a_git_repository_exit_1_one_line_nothing_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    result = ralph(plain, "init")
    assert result.exit_code == 1
    assert result.stderr == (
        f"ralph: error: {plain} is not inside a git repository; "
        "run ralph in your checkout or pass -C <checkout>\n"
    )
    assert result.stdout == ""
    assert list(plain.iterdir()) == []


def test_a_file_named_dot_ralph_is_refused_not_a_crash(control: Path) -> None:
    # mkdir used to raise FileExistsError: exit 3, "a bug in ralph".
    (control / ".ralph").write_text("not a directory\n")
    result = ralph(control, "init")
    assert result.exit_code == 1
    assert result.stderr == (
        f"ralph: error: {control / '.ralph'} exists and is not a directory; "
        "move it aside, then run `ralph init` again\n"
    )
    assert (control / ".ralph").read_text() == "not a directory\n"
    assert not (control / ".gitignore").exists()
