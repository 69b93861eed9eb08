"""`ralph init`: create what is missing under .ralph/ and in .gitignore; never overwrite."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ralph.config import AgentConfig, Config, GitConfig, render_config
from ralph.errors import ExitCode
from ralph.files import write_atomic
from ralph.git import Git, find_repository
from ralph.paths import CACHE_IGNORE, DEFAULT_WORKSPACE_ROOT, Paths
from ralph.queue import empty_queue_file, render_queue_file

logger = logging.getLogger(__name__)

CONFIG_HEADER = b"""\
# ralph configuration. Every key is optional; removing one restores its default.
# The keys and what they mean: README.md, section "Configuration".

"""

# ralph init --runner command: a placeholder that preflight will refuse until it is edited.
COMMAND_PLACEHOLDER = ["/path/to/your-agent", "--prompt-file", "{prompt_file}"]


def init(*, start: Path, runner: str | None, base: str | None) -> ExitCode:
    root = find_repository(start)
    paths = Paths.for_root(root)
    git = Git(root)
    base_branch = base or git.remote_head_branch("origin") or git.current_branch() or "main"
    agent = AgentConfig(runner=runner or "claude", command=COMMAND_PLACEHOLDER if runner == "command" else [])
    config = Config(git=GitConfig(base_branch=base_branch), agent=agent)

    paths.ralph_dir.mkdir(exist_ok=True)
    _create(paths, paths.config, CONFIG_HEADER + render_config(config))
    _create(paths, paths.queue_file(), render_queue_file(empty_queue_file()))
    _create(paths, paths.done_file(), render_queue_file(empty_queue_file()))
    for entry in (CACHE_IGNORE, DEFAULT_WORKSPACE_ROOT + "/"):
        _ignore(paths, git, entry)

    if runner == "command":
        click.echo(f"edit agent.command in {paths.relative(paths.config)}: it is a placeholder")
    click.echo(
        "next: ralph task add \"<what to do>\", commit .ralph/ and .gitignore, push, "
        "then run `ralph run` from cron (README: Running on a schedule)"
    )
    return ExitCode.OK


def _create(paths: Paths, path: Path, content: bytes) -> None:
    if path.exists():
        click.echo(f"kept {paths.relative(path)} (already there)")
        return
    write_atomic(path, content)
    click.echo(f"created {paths.relative(path)}")


def _ignore(paths: Paths, git: Git, entry: str) -> None:
    # Ask git rather than read .gitignore: the entry may be covered by a broader pattern or by
    # .git/info/exclude, and either is fine.
    if git.is_ignored(entry + "__ralph_ignore_probe__"):
        click.echo(f"kept {entry} ignored (already ignored)")
        return
    existing = paths.gitignore.read_bytes() if paths.gitignore.exists() else b""
    separator = b"" if not existing or existing.endswith(b"\n") else b"\n"
    write_atomic(paths.gitignore, existing + separator + entry.encode() + b"\n")
    click.echo(f"added {entry} to .gitignore")
