"""Agent runners: how each agent CLI is started non-interactively, and the environment it gets.

The prompt travels by stdin or by a file, never on argv: task text is untrusted, and argv is
readable by every local user in /proc/<pid>/cmdline.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from shutil import which
from typing import Final

from ralph.config import AgentConfig
from ralph.errors import PreflightError
from ralph.git import REPO_LOCATION_VARS
from ralph.home import PROVIDER as ENDPOINT_PROVIDER


@dataclass(frozen=True)
class Abilities:
    """What an agent can do in the mode its CLI runs in (full autonomy inside ralph's box, each CLI's
    own restricted mode without it): a prompt asks only for what it can do."""

    run_commands: bool = True
    commit: bool = True


@dataclass(frozen=True)
class Preset:
    binary: str
    # After the binary. "{model_flag}" becomes model_flag when agent.model is set (else nothing),
    # "{permissions}" the flags that say what the agent may do without asking (below), and
    # "{extra_args}" agent.extra_args, so all three land before any trailing positional.
    argv: tuple[str, ...]
    model_flag: tuple[str, ...]
    prompt_on_stdin: bool
    env: tuple[tuple[str, str], ...] = ()  # set for the agent: nothing may stop to ask or to update
    # Inside ralph's box the agent may do anything: its CLI's own "never ask, allow everything" mode.
    boxed: tuple[str, ...] = ()
    boxed_env: tuple[tuple[str, str], ...] = ()
    # Without the box (sandbox.mode = "none"), the CLI's own safer mode.
    unboxed: tuple[str, ...] = ()
    # Flags that set the same thing: one of them in agent.extra_args replaces the preset's own choice
    # (some CLIs exit at once when a flag such as --sandbox or --approval-mode is given twice).
    permission_flags: tuple[str, ...] = ()
    # What the CLI needs to reach its model: variables passed through from ralph's environment (by
    # prefix), and files under ~ copied into the job's private HOME (never bound: see ralph/home.py).
    credential_env: tuple[str, ...] = ()
    home_files: tuple[str, ...] = ()
    # Variables naming a place in the job's private HOME: (name, path relative to it).
    home_env: tuple[tuple[str, str], ...] = ()
    boxed_can: Abilities = Abilities()
    unboxed_can: Abilities = Abilities(run_commands=False, commit=False)


MODEL = "{model_flag}"
PERMISSIONS = "{permissions}"
EXTRA = "{extra_args}"

# Each CLI's documented non-interactive run, checked against its own --help and run end to end against
# a scripted model (versions and facts: contrib/agents/FACTS.md; README "Agent runners").
PRESETS: dict[str, Preset] = {
    "claude": Preset(
        binary="claude",
        # stream-json needs --verbose in -p mode.
        argv=("-p", "--verbose", "--output-format", "stream-json", PERMISSIONS, MODEL, EXTRA),
        model_flag=("--model", "{model}"),
        prompt_on_stdin=True,
        env=(("DISABLE_AUTOUPDATER", "1"),),
        # As root it refuses to skip permissions unless told it is sandboxed, which it is.
        boxed=("--permission-mode", "bypassPermissions"),
        boxed_env=(("IS_SANDBOX", "1"),),
        # acceptEdits approves edits, not shell commands.
        unboxed=("--permission-mode", "acceptEdits"),
        permission_flags=("--permission-mode", "--dangerously-skip-permissions"),
        credential_env=("ANTHROPIC_", "CLAUDE_CODE_"),
        home_files=(".claude/.credentials.json", ".claude.json"),
    ),
    "codex": Preset(
        binary="codex",
        argv=("exec", "--json", PERMISSIONS, MODEL, EXTRA, "-"),
        model_flag=("--model", "{model}"),
        prompt_on_stdin=True,
        # Its own sandbox cannot start inside ours; ours is the boundary.
        boxed=("--dangerously-bypass-approvals-and-sandbox",),
        # exec never asks; the workspace-write sandbox lets commands run, offline, inside the checkout.
        unboxed=("--sandbox", "workspace-write"),
        permission_flags=(
            "--sandbox",
            "-s",
            "--full-auto",
            "--dangerously-bypass-approvals-and-sandbox",
            "--yolo",
        ),
        credential_env=("OPENAI_", "CODEX_"),
        home_files=(".codex/auth.json", ".codex/config.toml"),
        # Its state (1 MB of sqlite and sessions) and its helpers live there; not under /tmp, where its
        # own sandbox refuses to put them.
        home_env=(("CODEX_HOME", ".codex"),),
        unboxed_can=Abilities(run_commands=True, commit=False),  # its sandbox keeps .git read-only
    ),
    "gemini": Preset(
        binary="gemini",
        # Without --skip-trust a fresh checkout is untrusted and headless gemini exits 55.
        argv=("--skip-trust", PERMISSIONS, "--output-format", "stream-json", MODEL, EXTRA),
        model_flag=("--model", "{model}"),
        prompt_on_stdin=True,
        boxed=("--approval-mode", "yolo"),
        unboxed=("--approval-mode", "auto_edit"),
        permission_flags=("--approval-mode", "--yolo", "-y"),
        credential_env=("GEMINI_", "GOOGLE_"),
        home_files=(".gemini/settings.json", ".gemini/oauth_creds.json", ".gemini/google_accounts.json"),
    ),
    "opencode": Preset(
        binary="opencode",
        # It reads a non-terminal stdin to the end as the message; its default permissions never ask.
        argv=("run", "--format", "json", MODEL, EXTRA),
        model_flag=("--model", "{model}"),
        prompt_on_stdin=True,
        env=(("OPENCODE_DISABLE_AUTOUPDATE", "1"),),
        boxed_env=(("OPENCODE_PERMISSION", '{"*": "allow"}'),),
        credential_env=("OPENCODE_", "ANTHROPIC_", "OPENAI_", "GEMINI_", "GOOGLE_", "OPENROUTER_"),
        home_files=(".local/share/opencode/auth.json", ".config/opencode/opencode.json"),
        unboxed_can=Abilities(),  # it has no restricted mode
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
        credential_env=("AIDER_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "OPENROUTER_", "DEEPSEEK_"),
        home_files=(".aider.conf.yml",),
        # It edits files; with --no-auto-commits and --no-suggest-shell-commands it neither commits nor
        # runs commands, boxed or not.
        boxed_can=Abilities(run_commands=False, commit=False),
    ),
}


# The versions each preset was checked against, end to end against a scripted model (what each does:
# contrib/agents/FACTS.md): (registry, package, version). `.ci/install-agents` installs exactly these,
# and `ralph doctor` names each installed CLI's version against them. The one place they are written.
TESTED_CLIS: Final[dict[str, tuple[str, str, str]]] = {
    "claude": ("npm", "@anthropic-ai/claude-code", "2.1.332"),
    "codex": ("npm", "@openai/codex", "0.171.0"),
    "gemini": ("npm", "@google/gemini-cli", "0.61.0"),
    "opencode": ("npm", "opencode-ai", "1.18.33"),
    "aider": ("pypi", "aider-chat", "0.86.2"),
}
_VERSION = re.compile(r"\d+\.\d+\.\d+")


def installed_version(executable: str, *, timeout_s: float = 20.0) -> str | None:
    """`<cli> --version`'s x.y.z (`2.1.332 (Claude Code)`, `codex-cli 0.171.0`, `aider 0.86.2`); None
    when it does not run or says no version."""
    try:
        done = subprocess.run(
            [executable, "--version"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "DISABLE_AUTOUPDATER": "1", "NO_COLOR": "1"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _VERSION.search(done.stdout) or _VERSION.search(done.stderr)
    return found.group(0) if done.returncode == 0 and found else None


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


def build(
    agent: AgentConfig, *, prompt_file: Path, task_id: str, workspace: Path, root: Path, boxed: bool
) -> Invocation:
    """The argv for one agent run; placeholders are replaced by paths and ids, never by task text.

    `boxed`: the agent runs in ralph's sandbox, so the preset gives it its CLI's full autonomy.
    """
    values = {
        "prompt_file": str(prompt_file),
        "task_id": task_id,
        "workspace": str(workspace),
        "model": _model_name(agent),
    }
    binary = resolve_agent(agent, root)
    if agent.runner == "command":
        argv = _expand(agent.command, values)
        argv[0] = binary
        return Invocation(argv=argv, prompt_on_stdin=not any("{prompt_file}" in a for a in agent.command))
    preset = PRESETS[agent.runner]
    widened = any(_names_flag(arg, flag) for arg in agent.extra_args for flag in preset.permission_flags)
    argv = [binary]
    for item in preset.argv:
        if item == MODEL:
            argv += _expand(preset.model_flag, values) if agent.model else []
        elif item == PERMISSIONS:
            argv += [] if widened else list(preset.boxed if boxed else preset.unboxed)
        elif item == EXTRA:
            argv += agent.extra_args
        else:
            argv += _expand([item], values)
    env = dict(preset.env) | (dict(preset.boxed_env) if boxed else {})
    return Invocation(argv=argv, prompt_on_stdin=preset.prompt_on_stdin, env=env)


def _model_name(agent: AgentConfig) -> str:
    """agent.model as the CLI's --model wants it: opencode names a model by its provider too, and with
    agent.base_url the model is in the provider ralph writes into its settings (ralph.home)."""
    if agent.runner == "opencode" and agent.base_url and agent.model and "/" not in agent.model:
        return f"{ENDPOINT_PROVIDER}/{agent.model}"
    return agent.model


def _names_flag(arg: str, flag: str) -> bool:
    """Whether `arg` is `flag`, or `flag=value` for a long flag."""
    return arg == flag or (flag.startswith("--") and arg.startswith(flag + "="))


def credential_names(agent: AgentConfig, environ: Mapping[str, str]) -> list[str]:
    """The variables of `environ` the runner's CLI reads its key or endpoint from."""
    if agent.runner == "command":
        return []
    prefixes = PRESETS[agent.runner].credential_env
    return sorted(k for k in environ if k.startswith(prefixes))


def abilities(agent: AgentConfig, *, boxed: bool) -> Abilities:
    """What the runner's agent can do: a `command` runner is the user's own program, trusted to."""
    if agent.runner == "command":
        return Abilities()
    preset = PRESETS[agent.runner]
    return preset.boxed_can if boxed else preset.unboxed_can


def home_env(agent: AgentConfig, home: Path) -> dict[str, str]:
    """The preset's variables that name places in the job's private HOME."""
    if agent.runner == "command":
        return {}
    return {name: str(home / rel) for name, rel in PRESETS[agent.runner].home_env}


def credential_files(agent: AgentConfig) -> tuple[str, ...]:
    """Files under ~ the runner's CLI logs in with (copied into a job's private HOME)."""
    return () if agent.runner == "command" else PRESETS[agent.runner].home_files


def child_env(*, task_id: str, workspace: str, base_branch: str) -> dict[str, str]:
    """The environment of a job or hook: ralph's own, but for where git should look and RALPH_*.

    Only the three variables set here are a job's business: any other RALPH_* in ralph's environment
    stays out (the Rust ralph's RQ-0942: queue-path variables leaked into CI and wiped the parent's
    queue).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RALPH_") and k not in REPO_LOCATION_VARS}
    env.update(RALPH_TASK_ID=task_id, RALPH_WORKSPACE=workspace, RALPH_BASE_BRANCH=base_branch)
    return env
