"""`ralph init`: create what is missing under .ralph/ and in .gitignore; never overwrite."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import click
from pydantic import ValidationError

from ralph.config import AgentConfig, Config, GitConfig, RunnerName, render_config
from ralph.errors import ConfigError, ExitCode, PreflightError
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
    # Everything is checked before anything is written: a refused init leaves no half-made .ralph/.
    config = _new_config(git, runner=runner, base=base)
    if paths.ralph_dir.exists() and not paths.ralph_dir.is_dir():
        raise PreflightError(
            f"{paths.ralph_dir} exists and is not a directory; move it aside, then run `ralph init` again"
        )

    paths.ralph_dir.mkdir(exist_ok=True)
    config_created = _create(paths, paths.config, CONFIG_HEADER + render_config(config))
    _create(paths, paths.queue_file(), render_queue_file(empty_queue_file()))
    _create(paths, paths.done_file(), render_queue_file(empty_queue_file()))
    for entry in (CACHE_IGNORE, DEFAULT_WORKSPACE_ROOT + "/"):
        _ignore(paths, git, entry)

    config_name = paths.relative(paths.config)
    if not config_created and (runner or base):
        # The file was kept, so the options changed nothing; silence here would look like success.
        logger.warning(
            "%s already exists, so --runner/--base were not applied; edit the file to change them",
            config_name,
        )
    if config_created and runner == "command":
        click.echo(f"edit agent.command in {config_name}: it is a placeholder")
    queue_name = paths.relative(paths.queue_file())
    if git.is_ignored(queue_name):
        # DESIGN §1.2: ticks read the queue from origin/<base>, so an ignored queue file never gets there.
        logger.warning(
            "git ignores %s, but the queue must be committed and pushed; "
            "narrow the .gitignore pattern to .ralph/cache/ and .ralph/workspaces/",
            queue_name,
        )
    click.echo(
        'next: ralph task add "<what to do>", commit .ralph/ and .gitignore, push, '
        "then run `ralph run` from cron (README: Running on a schedule)"
    )
    return ExitCode.OK


def _new_config(git: Git, *, runner: str | None, base: str | None) -> Config:
    base_branch = base or git.default_branch(GitConfig().remote)
    try:
        git_config = GitConfig(base_branch=base_branch)
    except ValidationError:
        # The branch name is the only free text here (--runner is a click.Choice); a name git would
        # refuse is the user's to fix, not a bug.
        what = "--base" if base else "the detected base branch"
        raise ConfigError(
            f"{what} {base_branch!r} is not a valid git branch name (git-check-ref-format(1)); "
            "pass --base BRANCH, e.g. --base main"
        ) from None
    agent = AgentConfig(
        runner=cast(RunnerName, runner or "claude"),
        command=COMMAND_PLACEHOLDER if runner == "command" else [],
    )
    return Config(git=git_config, agent=agent)


def _create(paths: Paths, path: Path, content: bytes) -> bool:
    """Write `path` unless it exists; True when it was written."""
    if path.exists():
        click.echo(f"kept {paths.relative(path)} (already there)")
        return False
    _write(path, content)
    click.echo(f"created {paths.relative(path)}")
    return True


def _ignore(paths: Paths, git: Git, entry: str) -> None:
    # Ask git rather than read .gitignore: the entry may be covered by a broader pattern or by
    # .git/info/exclude, and either is fine.
    if git.is_ignored(entry + "__ralph_ignore_probe__"):
        click.echo(f"kept {entry} ignored (already ignored)")
        return
    existing = paths.gitignore.read_bytes() if paths.gitignore.exists() else b""
    separator = b"" if not existing or existing.endswith(b"\n") else b"\n"
    _write(paths.gitignore, existing + separator + entry.encode() + b"\n")
    click.echo(f"added {entry} to .gitignore")


def _write(path: Path, content: bytes) -> None:
    try:
        write_atomic(path, content)
    except OSError as e:
        # A read-only checkout or a full disk is the user's to fix, not a bug in ralph.
        raise PreflightError(
            f"cannot write {path}: {e.strerror or e}; check its permissions and free space"
        ) from None
