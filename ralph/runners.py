"""Agent runners: how each agent CLI is started non-interactively, and the environment it gets.

The prompt travels by stdin or by a file, never on argv: task text is untrusted, and argv is
readable by every local user in /proc/<pid>/cmdline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from shutil import which

from ralph.config import AgentConfig
from ralph.errors import PreflightError
from ralph.git import REPO_LOCATION_VARS


@dataclass(frozen=True)
class Preset:
    binary: str
    # After the binary. "{model_flag}" becomes model_flag when agent.model is set (else nothing), and
    # "{extra_args}" becomes agent.extra_args, so both land before any trailing positional.
    argv: tuple[str, ...]
    model_flag: tuple[str, ...]
    prompt_on_stdin: bool
    env: tuple[tuple[str, str], ...] = ()  # set for the agent: nothing may stop to ask or to update


MODEL = "{model_flag}"
EXTRA = "{extra_args}"

# Each CLI's documented non-interactive run, checked against its own --help (claude 2.1.197, codex-cli
# 0.169.0, gemini 0.61.0, opencode 1.18.33, aider 0.86.2; README "Agent runners" says what each flag
# does). The defaults let the agent edit files in its checkout without asking; what else it may do
# without asking is each CLI's safer setting, widened with agent.extra_args.
PRESETS: dict[str, Preset] = {
    "claude": Preset(
        binary="claude",
        # stream-json needs --verbose in -p mode; acceptEdits approves edits, not shell commands.
        argv=(
            "-p",
            "--verbose",
            "--output-format",
            "stream-json",
            "--permission-mode",
            "acceptEdits",
            MODEL,
            EXTRA,
        ),
        model_flag=("--model", "{model}"),
        prompt_on_stdin=True,
        env=(("DISABLE_AUTOUPDATER", "1"),),
    ),
    "codex": Preset(
        binary="codex",
        # exec never asks; the workspace-write sandbox lets commands run, offline, inside the checkout.
        argv=("exec", "--json", "--sandbox", "workspace-write", MODEL, EXTRA, "-"),
        model_flag=("--model", "{model}"),
        prompt_on_stdin=True,
    ),
    "gemini": Preset(
        binary="gemini",
        # Without --skip-trust a fresh checkout is untrusted and headless gemini exits 55.
        argv=("--skip-trust", "--approval-mode", "auto_edit", "--output-format", "stream-json", MODEL, EXTRA),
        model_flag=("--model", "{model}"),
        prompt_on_stdin=True,
    ),
    "opencode": Preset(
        binary="opencode",
        # It reads a non-terminal stdin to the end as the message; its default permissions never ask.
        argv=("run", "--format", "json", MODEL, EXTRA),
        model_flag=("--model", "{model}"),
        prompt_on_stdin=True,
        env=(("OPENCODE_DISABLE_AUTOUPDATE", "1"),),
    ),
    "aider": Preset(
        binary="aider",
        # No commits of its own (ralph commits with the task's message), no questions, no network extras.
        argv=(
            "--message-file",
            "{prompt_file}",
            "--yes-always",
            "--no-auto-commits",
            "--no-dirty-commits",
            "--no-gitignore",
            "--no-analytics",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-fancy-input",
            "--no-pretty",
            "--no-detect-urls",
            "--disable-playwright",
            "--no-suggest-shell-commands",
            "--chat-history-file",
            "/dev/null",
            "--input-history-file",
            "/dev/null",
            MODEL,
            EXTRA,
        ),
        model_flag=("--model", "{model}"),
        prompt_on_stdin=False,
    ),
}


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    prompt_on_stdin: bool
    env: dict[str, str] = field(default_factory=dict)  # added to the agent's environment


def agent_binary(agent: AgentConfig) -> str:
    """The executable a runner starts, as configured (not yet looked up)."""
    if agent.binary:
        return agent.binary
    if agent.runner == "command":
        return agent.command[0]
    return PRESETS[agent.runner].binary


def resolve_agent(agent: AgentConfig, root: Path) -> str:
    """The agent executable as an absolute path, or a PreflightError saying how to make it resolvable."""
    return _resolve(agent_binary(agent), root, what=f"agent runner {agent.runner!r}", key="agent.binary")


def resolve_ci(command: Sequence[str], root: Path) -> str | None:
    if not command:
        return None
    return _resolve(command[0], root, what="the CI command", key="ci.command")


def find_executable(binary: str, root: Path, *, path: str | None = None) -> str | None:
    """Where `binary` is, by ralph's rules: `~` is the home directory, a relative path with a slash is a
    file in the repository (every workspace has it too), a bare name is looked up on `path` (the
    environment's PATH when None)."""
    binary = os.path.expanduser(binary)
    if "/" in binary:
        found = which(binary if os.path.isabs(binary) else str(root / binary))
    else:
        found = which(binary, path=path)
    return os.path.abspath(found) if found else None


def _resolve(binary: str, root: Path, *, what: str, key: str) -> str:
    found = find_executable(binary, root)
    if found is None:
        where = f"in {root}" if "/" in binary else f"on PATH ({os.environ.get('PATH', '')})"
        raise PreflightError(
            f"{what}: {binary!r} is not an executable {where}; install it, or set {key} to its absolute path"
        )
    return found


_PLACEHOLDER = re.compile(r"\{(prompt_file|task_id|workspace|model)\}")


def _expand(items: Sequence[str], values: dict[str, str]) -> list[str]:
    # One pass: a value that itself contains `{model}` (a path, say) is not expanded a second time.
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], item) for item in items]


def build(agent: AgentConfig, *, prompt_file: Path, task_id: str, workspace: Path, root: Path) -> Invocation:
    """The argv for one agent run; placeholders are replaced by paths and ids, never by task text."""
    values = {
        "prompt_file": str(prompt_file),
        "task_id": task_id,
        "workspace": str(workspace),
        "model": agent.model,
    }
    binary = resolve_agent(agent, root)
    if agent.runner == "command":
        argv = _expand(agent.command, values)
        argv[0] = binary
        return Invocation(argv=argv, prompt_on_stdin=not any("{prompt_file}" in a for a in agent.command))
    preset = PRESETS[agent.runner]
    argv = [binary]
    for item in preset.argv:
        if item == MODEL:
            argv += _expand(preset.model_flag, values) if agent.model else []
        elif item == EXTRA:
            argv += agent.extra_args
        else:
            argv += _expand([item], values)
    return Invocation(argv=argv, prompt_on_stdin=preset.prompt_on_stdin, env=dict(preset.env))


def child_env(*, task_id: str, workspace: str, base_branch: str) -> dict[str, str]:
    """The environment of a job or hook: ralph's own, but for where git should look and RALPH_*.

    Only the three variables set here are a job's business: any other RALPH_* in ralph's environment
    stays out (the Rust ralph's RQ-0942: queue-path variables leaked into CI and wiped the parent's
    queue).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RALPH_") and k not in REPO_LOCATION_VARS}
    env.update(RALPH_TASK_ID=task_id, RALPH_WORKSPACE=workspace, RALPH_BASE_BRANCH=base_branch)
    return env
