"""What a task may not change, listed for an agent CLI that must keep away from it (aider's ignore
file): the same judgement as the landing's check, over the files tracked on the base."""

from __future__ import annotations

from pathlib import Path

from conftest import bump_submodule, commit_ignored_submodule, git

from ralph.config import Config
from ralph.git import Git
from ralph.policy import changes, problems, protected_files
from ralph.workspace import escape_ignore


def test_protected_files_are_those_the_landing_would_refuse(repo: Path) -> None:
    files = {
        ".ralph/config.toml": "",
        ".ralph/notes.md": "allowed back\n",
        "tasks/queue.json": "{}",  # a queue kept outside .ralph/
        "tasks/done.json": "{}",
        "ci.sh": "#!/bin/sh\n",
        "secrets/deep/key.txt": "s\n",  # fnmatch: '*' crosses '/'
        "src/app.py": "print()\n",
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "files")
    config = Config.model_validate(
        {
            "ci": {"command": ["sh", "ci.sh"]},
            "landing": {"protected_paths": ["secrets/*"], "allow_paths": [".ralph/notes.md"]},
        }
    )
    found = protected_files(Git(repo), "HEAD", config, ("tasks/queue.json", "tasks/done.json"))
    assert sorted(found) == [
        ".ralph/config.toml",
        "ci.sh",
        "secrets/deep/key.txt",
        "tasks/done.json",
        "tasks/queue.json",
    ]


def test_a_submodule_bump_is_a_change_though_the_config_says_to_ignore_it(repo: Path) -> None:
    """`ignore = all` in .gitmodules hides a submodule's bump from `git diff`; the landing policy must
    still see it (a protected path may be a submodule)."""
    base = commit_ignored_submodule(repo, "vendor/lib")
    head = bump_submodule(repo, "vendor/lib", base)
    assert [(c.path, c.mode, c.blob) for c in changes(Git(repo), base, head)] == [
        ("vendor/lib", "160000", base)
    ]
    config = Config.model_validate({"landing": {"protected_paths": ["vendor/**"]}})
    found = problems(Git(repo), base=base, head=head, config=config, queue_paths=[])
    assert any("protected paths: vendor/lib" in p for p in found), found


def test_an_escaped_name_ignores_exactly_that_file(repo: Path) -> None:
    """The aider ignore file and a checkout's excludes name files by escape_ignore: a name holding a
    pattern character, a leading `#` or `!`, or a trailing space still means that one file."""
    names = ["a b ", "#hash", "!bang", "[set]", "star*", "q?", "back\\slash"]
    for name in names:
        (repo / name).write_text("x\n")
    (repo / "starry").write_text("x\n")  # what `star*` would match unescaped
    (repo / "sets").write_text("x\n")  # what `[set]` would match unescaped
    excludes = repo / ".git" / "info" / "exclude"
    excludes.write_text("".join(f"/{escape_ignore(n)}\n" for n in names))
    listed = git(repo, "ls-files", "-z", "--others", "--ignored", "--exclude-standard").split("\0")
    assert sorted(p for p in listed if p) == sorted(names)
