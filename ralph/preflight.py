"""Before a tick starts anything: everything it needs is there, and nothing unsafe is asked of it.

Each check fails with one line that says what is wrong and how to fix it; nothing is started.
"""

from __future__ import annotations

import os

from ralph import ownership, runners, sandbox
from ralph.config import Config
from ralph.crew import Crew
from ralph.errors import GitError, PreflightError
from ralph.git import Git
from ralph.launch import expand_agent_env
from ralph.paths import Paths


def preflight(crew: Crew) -> None:
    """Fail before anything is started (DESIGN §3.4)."""
    if os.geteuid() == 0 and not crew.options.allow_root:
        raise PreflightError(
            "running as root: agents would run as root too; run ralph as a dedicated user "
            "(or pass --allow-root inside a throwaway sandbox)"
        )
    ownership.check(crew.paths)  # set up by `ralph init`; no Rust ralph coordinator at work here
    remote = crew.checkout.remote
    try:
        crew.remote_url = crew.git.run("remote", "get-url", remote).out
    except GitError:
        raise PreflightError(
            f"no remote {remote!r} in {crew.checkout.root}: add it with `git remote add {remote} <url>` "
            "(or set git.remote)"
        ) from None
    check_workspace_root(crew.git, crew.paths)
    runners.resolve_agent(crew.config.agent, crew.checkout.root)
    runners.resolve_ci(crew.config.ci.command, crew.checkout.root)
    expand_agent_env(crew.config.agent.env, os.environ)
    check_identity(crew.git)
    check_sandbox(crew.config)


def check_identity(git: Git) -> None:
    """ralph's commits use the control checkout's identity (its own config included): it must exist."""
    for role in ("AUTHOR", "COMMITTER"):
        try:
            git.ident(role)
        except GitError as e:
            if e.returncode != 128:  # not "no identity": a timeout, a full disk, git itself
                raise
            said = (e.stderr.strip().splitlines() or ["no identity"])[-1]
            raise PreflightError(
                f"git has no {role.lower()} identity for ralph's commits in {git.cwd} ({said}): set one with "
                '`git config user.name "..."` and `git config user.email ...` there (or --global), '
                "or GIT_AUTHOR_NAME/GIT_AUTHOR_EMAIL and GIT_COMMITTER_NAME/GIT_COMMITTER_EMAIL"
            ) from None


def check_sandbox(config: Config) -> None:
    """With sandbox.mode = "bwrap" (the default) a tick never runs a job unboxed: no box, no crew."""
    if config.sandbox.mode != "bwrap":
        return
    found = sandbox.probe()
    if not found.ok:
        raise PreflightError(
            f"sandbox: {found.problem}. Every job runs in a bubblewrap box; to run jobs as ralph itself "
            'instead (unsafe: README "Security model"), set sandbox.mode = "none" in .ralph/config.toml'
        )


def check_workspace_root(git: Git, paths: Paths) -> None:
    """The workspace root, when inside the repository, must be ignored and must not be the root itself."""
    root = paths.root.resolve()
    ws_root = paths.workspace_root.resolve()
    if root.is_relative_to(ws_root):
        raise PreflightError(
            f"parallel.workspace_root {ws_root} is the repository or contains it; "
            "use a directory of its own, outside the repository or in an ignored subdirectory such as "
            ".ralph/workspaces"
        )
    try:
        rel = ws_root.relative_to(root).as_posix()
    except ValueError:
        return  # outside the repository: nothing to ignore
    fixes = (
        f"move parallel.workspace_root outside the repository, or add `{rel}/` to .gitignore "
        "(or .git/info/exclude)"
    )
    try:
        ignored = git.is_ignored(rel, f"{rel}/__ralph_ignore_probe__")
    except GitError as e:
        raise PreflightError(f"cannot tell whether {rel} is gitignored ({e}); {fixes}") from None
    if not ignored:
        raise PreflightError(
            f"parallel.workspace_root {rel} is inside the repository but not gitignored, so workspaces "
            f"could be committed; {fixes}"
        )
