"""`ralph init`: create what is missing under .ralph/ and in .gitignore; never overwrite.

In a repository the Rust ralph set up, its `.ralph/config.jsonc` is read as it is (no config.toml is
written over it, which would silently replace its CI gate and runner); `ralph init --from-rust`
writes the equivalent config.toml once, and says what it could not carry over.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import click
from pydantic import ValidationError

from ralph import rust_config
from ralph.config import (
    AgentConfig,
    Config,
    GitConfig,
    RunnerName,
    config_from_rust,
    load_config,
    render_config,
)
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


def init(*, start: Path, runner: str | None, base: str | None, from_rust: bool = False) -> ExitCode:
    root = find_repository(start)
    paths = Paths.for_root(root)
    git = Git(root)
    # Everything is checked before anything is written: a refused init leaves no half-made .ralph/.
    if paths.ralph_dir.exists() and not paths.ralph_dir.is_dir():
        raise PreflightError(
            f"{paths.ralph_dir} exists and is not a directory; move it aside, then run `ralph init` again"
        )
    rust = paths.rust_config.is_file() and not paths.config.exists()
    if from_rust:
        config, report = _from_rust(paths, git, runner=runner, base=base)
    else:
        config = _new_config(git, runner=runner, base=base)
        report = []
    # The queue files are where the configuration in force says (config.toml, or config.jsonc).
    queues = config if from_rust else _existing_config(paths) or config
    paths = Paths.for_root(root, queue_file=queues.queue.file, done_file=queues.queue.done_file)

    paths.ralph_dir.mkdir(exist_ok=True)
    config_created = False
    if rust and not from_rust:
        # Writing a config.toml here would silently replace the CI gate and the runner config.jsonc names.
        click.echo(
            f"kept {paths.relative(paths.rust_config)} (the Rust ralph's; ralph reads it as it is: "
            "`ralph doctor` lists its keys that mean nothing here, `ralph init --from-rust` writes "
            "the equivalent config.toml)"
        )
    else:
        header = CONFIG_HEADER + (FROM_RUST_HEADER if from_rust else b"")
        config_created = _create(paths, paths.config, header + render_config(config))
    for path in (paths.queue_file(), paths.done_file()):
        path.parent.mkdir(parents=True, exist_ok=True)
        _create(paths, path, render_queue_file(empty_queue_file()))
    for entry in (CACHE_IGNORE, DEFAULT_WORKSPACE_ROOT + "/"):
        _ignore(paths, git, entry)

    config_name = paths.relative(paths.config)
    if not config_created and (runner or base):
        # The file was kept, so the options changed nothing; silence here would look like success.
        kept = paths.relative(paths.rust_config) if rust and not from_rust else config_name
        logger.warning(
            "%s already exists, so --runner/--base were not applied; edit the file to change them", kept
        )
    for line in report:
        click.echo(line)
    if config_created and config.agent.runner == "command" and config.agent.command == COMMAND_PLACEHOLDER:
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


FROM_RUST_HEADER = (
    b"# Carried over from .ralph/config.jsonc (the Rust ralph's) by `ralph init --from-rust`;\n"
    b"# this file wins over that one from now on.\n\n"
)


def _existing_config(paths: Paths) -> Config | None:
    """The configuration already there (for its queue file names), or None."""
    if not paths.config.exists() and not paths.rust_config.exists():
        return None
    return load_config(paths.config)


def _from_rust(paths: Paths, git: Git, *, runner: str | None, base: str | None) -> tuple[Config, list[str]]:
    """config.toml's content from config.jsonc, and what to tell the person about it."""
    source = paths.relative(paths.rust_config)
    if not paths.rust_config.is_file():
        raise PreflightError(f"{source} does not exist: --from-rust reads the Rust ralph's config from there")
    if paths.config.exists():
        raise PreflightError(
            f"{paths.relative(paths.config)} exists already (and wins over {source}); move it aside to "
            "write it again from the Rust config"
        )
    translation = rust_config.translate(rust_config.read(paths.rust_config))
    report = []
    unrunnable = [p for p in translation.problems if p.startswith("agent.runner:")]
    problems = [p for p in translation.problems if p not in unrunnable]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"{source}: {problems[0]}{more}")
    agent = translation.values.setdefault("agent", {})
    if runner:
        agent["runner"] = runner
    elif unrunnable:
        agent["runner"] = "command"
        report.append(f'not carried over: {unrunnable[0].split(";")[0]}; runner = "command" written instead')
    if agent.get("runner") == "command":
        agent.setdefault("command", COMMAND_PLACEHOLDER)
    base_branch = base or git.default_branch(GitConfig().remote)
    translation.put("git.base_branch", base_branch, "--base")
    config = config_from_rust(paths.rust_config, translation)
    if translation.unmapped:
        report.append(f"not carried over (they mean nothing here): {', '.join(translation.unmapped)}")
    report += [f"note: {n}" for n in translation.notes]
    return config, report


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
