"""The pre-commit hook entry, and the checks `ralph doctor` is to show (computed here, shown there)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import git
from helpers import ralph

from ralph import rust_config
from ralph.git import Git
from ralph.ownership import cache_not_ignored, inspect_rust_lock
from ralph.paths import Paths

HOOKS = Path(__file__).resolve().parent.parent / ".pre-commit-hooks.yaml"


def hook_field(name: str) -> str:
    match = re.search(rf"^[- ] {name}: (.+)$", HOOKS.read_text(), re.M)
    assert match is not None, name
    return match.group(1)


def test_the_hook_runs_validate_on_the_files_about_to_be_committed(checkout: Path) -> None:
    assert hook_field("id") == "ralph-queue-validate"
    assert hook_field("pass_filenames") == "false"
    files = re.compile(hook_field("files"))
    assert all(files.search(p) for p in (".ralph/queue.json", ".ralph/done.jsonc", ".ralph/config.toml"))
    assert not files.search("src/queue.json")
    entry = hook_field("entry").split()
    assert entry[:1] == ["ralph"]
    run = [sys.executable, "-m", "ralph", *entry[1:]]
    assert subprocess.run(run, cwd=checkout, capture_output=True).returncode == 0
    (checkout / ".ralph" / "queue.json").write_text('{"version": 1, "tasks": [{"id": "RQ-0001"}]}')
    bad = subprocess.run(run, cwd=checkout, capture_output=True, text=True)
    assert bad.returncode == 1 and "title: Field required" in bad.stdout


def test_doctor_facts(checkout: Path) -> None:
    paths = Paths.for_root(checkout)
    assert cache_not_ignored(Git(checkout), paths) is None  # `ralph init` ignored it
    (checkout / ".gitignore").write_text(".ralph/workspaces/\n")  # as the Rust ralph's init leaves it
    problem = cache_not_ignored(Git(checkout), paths)
    assert problem is not None and problem.startswith(".ralph/cache/ is not ignored by git")
    assert inspect_rust_lock(paths) is None
    assert rust_config.shadowed(paths.config) is None
    paths.rust_config.write_text('{"version": 2, "loop": {}}')
    assert rust_config.shadowed(paths.config) == paths.rust_config
    assert rust_config.unmapped(paths.rust_config) == ["loop"]
    git(checkout, "status")  # still a repository
    assert ralph(checkout, "queue", "validate").exit_code == 0
