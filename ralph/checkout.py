"""The control checkout: where cron runs ralph. Its root, its files and its configuration."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ralph.config import Config, load_config
from ralph.git import Git, find_repository
from ralph.paths import Paths


@dataclass(frozen=True)
class Checkout:
    root: Path
    paths: Paths
    config: Config

    @property
    def remote(self) -> str:
        return self.config.git.remote

    def tracking_ref(self, branch: str) -> str:
        """Where a fetch keeps the remote's `branch`: refs/remotes/<remote>/<branch>."""
        return f"refs/remotes/{self.remote}/{branch}"

    def git(self) -> Git:
        return Git(self.root)

    def base_branch(self) -> str:
        """The configured base branch, else the remote's HEAD branch, else the current branch, else main."""
        return self._base_branch

    @cached_property
    def _base_branch(self) -> str:
        # Asked of git once per Checkout: a tick asks three times (its crew, the ledger, its health record).
        return self.config.git.base_branch or self.git().default_branch(self.remote)


def open_checkout(start: Path) -> Checkout:
    root = find_repository(start)
    config = load_config(Paths.for_root(root).config)
    paths = Paths.for_root(
        root, config.parallel.workspace_root, queue_file=config.queue.file, done_file=config.queue.done_file
    )
    return Checkout(root=root, paths=paths, config=config)


def open_initialised(start: Path) -> Checkout:
    """open_checkout for a command that writes queue files: without `ralph init` there is no
    .gitignore entry for .ralph/cache/, and the lock and files it would create show up as clutter."""
    checkout = open_checkout(start)
    checkout.paths.require_initialised()
    return checkout
