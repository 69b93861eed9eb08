"""What a job is given: its command, its box, its environment, its private HOME and its checkout.

Every job (agent, remediation, CI gate, and the after_create hook before either) runs in a box
(ralph.sandbox) unless sandbox.mode is "none": the checkout it works in and its private HOME are its
only writable project paths; the control checkout, ralph's state, the other workspaces, the remote (a
local path) and the user's credentials are hidden; its environment is an allowlist. An agent job gets
its CLI's full autonomy inside the box (ralph.runners); a gate job judges a checkout ralph made from
the commit object, never the agent's own clone.

One Launcher serves one tick: what it reads once (the ignored files to copy, the identity, where the
objects are) it reads only when the first job needs it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

from ralph import policy, runners, sandbox, workspace
from ralph.checkout import Checkout
from ralph.clock import format_z
from ralph.config import Config
from ralph.errors import PreflightError
from ralph.git import Git, cat_blobs
from ralph.home import keep_from_aider, make_home, point_at_endpoint
from ralph.job import JobSpec

# Set for every job, and the only RALPH_* a job sees (the Rust ralph's RQ-0942: queue-path variables
# leaked into CI and wiped the parent's queue).
_RALPH_TASK_ID = "RALPH_TASK_ID"
GATES_DIR = ".gates"  # under the workspace root; no task id starts with '.'
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Launcher:
    """Builds the JobSpecs of one tick."""

    checkout: Checkout
    git: Git
    base: str
    remote_url: str
    identity: Mapping[str, str]
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def config(self) -> Config:
        return self.checkout.config

    @property
    def boxed(self) -> bool:
        return self.config.sandbox.mode == "bwrap"

    @cached_property
    def copies(self) -> tuple[str, ...]:
        """The ignored files every checkout gets, listed once per tick."""
        return tuple(
            workspace.ignored_files_to_copy(
                self.checkout.root,
                self.config.parallel.ignored_file_allowlist,
                workspace_root=self.checkout.paths.workspace_root,
            )
        )

    @cached_property
    def _kept_from_aider(self) -> tuple[list[str], bytes | None]:
        """What aider must not pull into its chat: every tracked file a task may not change, as the
        landing's policy judges it (ralph's files, the queue's, the gate's, landing.protected_paths
        but landing.allow_paths), and the repository's own .aiderignore; the same for every job of a
        tick. aider adds only tracked files, so naming them is enough."""
        tracking = f"refs/remotes/{self.checkout.remote}/{self.base}"
        paths = self.checkout.paths
        queue_paths = (*paths.queue_names(), *paths.done_names())
        protected = policy.protected_files(self.git, tracking, self.config, queue_paths)
        own = cat_blobs(self.git, [f"{tracking}:.aiderignore"]).get(f"{tracking}:.aiderignore")
        return ["/" + workspace.escape_ignore(p) for p in protected], own

    @cached_property
    def object_dirs(self) -> list[str]:
        return workspace.object_dirs(self.checkout.root)

    @cached_property
    def hidden(self) -> list[str]:
        paths = self.checkout.paths
        out = sandbox.hidden_paths(
            control=self.checkout.root, remote_url=self.remote_url, extra=self.config.sandbox.hide_paths
        )
        # Every workspace and run directory but the job's own (bound back below).
        return [*out, str(paths.workspace_root), str(paths.runs)]

    def setup(self) -> workspace.Setup:
        return workspace.Setup(control=self.checkout.root, base_branch=self.base, copies=self.copies)

    def gate_dir(self, task_id: str) -> Path:
        return self.checkout.paths.workspace_root / GATES_DIR / self.checkout.paths.workspace(task_id).name

    # --- jobs -----------------------------------------------------------------------------------------

    def agent(
        self,
        *,
        task_id: str,
        ws: Path,
        prompt_path: Path,
        stem: str,
        now: datetime,
        checkout_at: tuple[str, str] | None,
        files: Mapping[str, bytes] | None = None,
    ) -> JobSpec:
        """An agent (or remediation) job in `ws`; with `checkout_at` = (commit, base sha) it makes the
        workspace first (it must not exist), with a fresh private HOME, and writes `files` into it
        (paths relative to it, under .ralph/cache: never committed)."""
        paths = self.checkout.paths
        run_dir = paths.run_dir(task_id)
        home = run_dir / "home"
        if checkout_at is not None or not home.is_dir():
            logins = (*runners.credential_files(self.config.agent), *self.config.sandbox.home_files)
            make_home(home, real_home=Path.home(), files=logins, identity=self.identity)
        invocation = runners.build(
            self.config.agent,
            prompt_file=prompt_path,
            task_id=task_id,
            workspace=ws,
            root=self.checkout.root,
            boxed=self.boxed,
        )
        agent = self.config.agent
        passthrough = [
            *self.config.sandbox.env_passthrough,
            *runners.credential_names(agent, self.environ),
            *([agent.api_key_env] if agent.api_key_env else []),
        ]
        endpoint = point_at_endpoint(
            home,
            runner=agent.runner,
            base_url=agent.base_url,
            key_name=agent.api_key_env,
            key=self.environ.get(agent.api_key_env) if agent.api_key_env else None,
            model=agent.model,
        )
        extra = {
            **self._ralph_env(task_id, ws),
            # Some CLIs run git with no global config (gemini): the identity travels by environment. A
            # usage limit's "try again at 10:41 PM" is read as UTC.
            **self.identity,
            "TZ": "UTC",
            **runners.home_env(agent, home),
            **invocation.env,
            **endpoint,
            **(keep_from_aider(home, *self._kept_from_aider) if agent.runner == "aider" else {}),
            **expand_agent_env(agent.env, self.environ),
        }
        box = self._box(
            cwd=ws,
            writable=(ws, home),
            shown=(prompt_path, Path(invocation.argv[0])),
            network=self.config.sandbox.agent_network,
        )
        prepare: dict[str, object] | None = None
        if checkout_at is not None:
            commit, base_sha = checkout_at
            prepare = {"setup": self.setup().as_dict(), "commit": commit, "base_sha": base_sha}
            if files:
                prepare["files"] = {rel: data.decode() for rel, data in files.items()}
        hooks = self.config.hooks
        return JobSpec(
            task_id=task_id,
            kind="agent",
            argv=invocation.argv,
            cwd=str(ws),
            env=self._env(home=home, cwd=ws, passthrough=passthrough, extra=extra),
            log_path=str(run_dir / "agent.log"),
            result_path=str(run_dir / f"{stem}.result.json"),
            timeout_s=self.config.agent.timeout_minutes * 60,
            grace_s=self.config.parallel.kill_grace_seconds,
            created_at=format_z(now),
            stdin_path=str(prompt_path) if invocation.prompt_on_stdin else None,
            box=box,
            prepare=prepare,
            after_create=list(hooks.after_create) if prepare and hooks.after_create else None,
            setup_timeout_s=float(hooks.timeout_seconds),
            follow=self._follow(),
        )

    def gate(self, *, task_id: str, commit: str, base_sha: str, stem: str, now: datetime) -> JobSpec:
        """The CI gate on `commit` (in the control repository), in a checkout ralph makes from it."""
        paths = self.checkout.paths
        run_dir = paths.run_dir(task_id)
        home = run_dir / "gate-home"
        make_home(home, real_home=Path.home(), files=(), identity=self.identity)
        checkout_dir = self.gate_dir(task_id)
        command = list(self.config.ci.command)
        # A relative program is the control checkout's copy, which the agent's commits cannot edit.
        command[0] = runners.resolve_ci(command, self.checkout.root) or command[0]
        box = self._box(
            cwd=checkout_dir,
            writable=(checkout_dir, home),
            shown=(Path(command[0]),),
            network=self.config.sandbox.gate_network,
        )
        hooks = self.config.hooks
        return JobSpec(
            task_id=task_id,
            kind="ci",
            argv=command,
            cwd=str(checkout_dir),
            env=self._env(
                home=home,
                cwd=checkout_dir,
                passthrough=self.config.sandbox.env_passthrough,
                extra=self._ralph_env(task_id, checkout_dir),
            ),
            log_path=str(run_dir / "ci.log"),
            result_path=str(run_dir / f"{stem}.result.json"),
            timeout_s=self.config.ci.timeout_minutes * 60,
            grace_s=self.config.parallel.kill_grace_seconds,
            created_at=format_z(now),
            box=box,
            prepare={"setup": self.setup().as_dict(), "commit": commit, "base_sha": base_sha},
            after_create=list(hooks.after_create) or None,
            setup_timeout_s=float(hooks.timeout_seconds),
            follow=self._follow(),
        )

    # --- parts ----------------------------------------------------------------------------------------

    def _follow(self) -> str | None:
        """run.follow_jobs: the job asks for a tick when it ends (ralph.wake)."""
        return str(self.checkout.paths.parallel) if self.config.run.follow_jobs else None

    def _ralph_env(self, task_id: str, cwd: Path) -> dict[str, str]:
        return {_RALPH_TASK_ID: task_id, "RALPH_WORKSPACE": str(cwd), "RALPH_BASE_BRANCH": self.base}

    def _env(
        self, *, home: Path, cwd: Path, passthrough: list[str], extra: Mapping[str, str]
    ) -> dict[str, str]:
        tmpdir = "/tmp" if self.boxed else self.environ.get("TMPDIR", "/tmp")
        return sandbox.job_env(
            self.environ, home=str(home), cwd=str(cwd), tmpdir=tmpdir, passthrough=passthrough, extra=extra
        )

    def _box(
        self, *, cwd: Path, writable: tuple[Path, ...], shown: tuple[Path, ...], network: bool
    ) -> dict[str, object] | None:
        if not self.boxed:
            return None
        hidden = self.hidden
        # Bound back read-only, where a cover (or the private /tmp) would hide them: the objects the
        # checkout borrows, the prompt file, the program itself, and ralph's own installation (a job
        # wrapper's Python may live in a virtual environment under /tmp).
        wanted = [*self.object_dirs, *map(str, shown), *_installation()]
        for path in list(shown):
            real = os.path.realpath(path)
            if real != str(path):
                wanted.append(real)
        covered = [*hidden, "/tmp"]
        readonly = tuple(dict.fromkeys(p for p in wanted if any(_under(p, h) for h in covered)))
        box = sandbox.Box(
            cwd=str(cwd),
            writable=tuple(str(p) for p in writable),
            readonly=readonly,
            hidden=tuple(hidden),
            network=network,
        )
        return box.as_dict()


def _under(path: str, root: str) -> bool:
    path, root = os.path.abspath(path), os.path.abspath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _installation() -> list[str]:
    """Where ralph and the Python running it live (the job wrapper needs neither inside the box, but a
    gate or agent started as `python ...` by sys.executable does)."""
    here = Path(__file__).resolve().parent.parent
    return list(dict.fromkeys([sys.prefix, sys.base_prefix, str(here)]))


def expand_agent_env(values: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """agent.env with each `${NAME}` replaced by ralph's own variable NAME; PreflightError if unset."""

    def expand(key: str, value: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise PreflightError(
                    f"agent.env.{key} refers to ${{{name}}}, which is not set in ralph's environment; "
                    "set it (in the cron line or the systemd unit), or write the value itself"
                )
            return environ[name]

        return _REFERENCE.sub(one, value)

    return {key: expand(key, value) for key, value in values.items()}
