"""The real agent CLIs for end-to-end tests: where they are, how to point each at a scripted model
server, and the bubblewrap box they run in. contrib/agents/FACTS.md records why each setting is so.

`.ci/install-agents` installs the pinned CLIs into $RALPH_AGENTS_DIR (default ~/.cache/ralph-agents);
`require_cli` finds one there or on PATH. Outside CI a missing CLI skips its test with the reason;
under CI=true it fails the test, so a CI run cannot pass by skipping what it was meant to prove.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Read at import, before tests/conftest.py points HOME and PATH at a throwaway home for each test.
AGENTS_DIR = Path(os.environ.get("RALPH_AGENTS_DIR") or Path.home() / ".cache" / "ralph-agents")
_PATH = os.environ.get("PATH", os.defpath)

CLIS = ("claude", "codex", "gemini", "opencode", "aider")

# What runs inside every box besides the CLI: a shell, git, python3 and node from the system.
BOX_PATH = "/usr/local/bin:/usr/bin:/bin"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Scripted Agent",
    "GIT_AUTHOR_EMAIL": "agent@example.com",
    "GIT_COMMITTER_NAME": "Scripted Agent",
    "GIT_COMMITTER_EMAIL": "agent@example.com",
}


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _missing(reason: str) -> None:
    if under_ci():
        pytest.fail(f"{reason} (CI=true: a missing agent CLI is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def find_cli(name: str) -> str | None:
    """The CLI's executable: the install cache first, then PATH."""
    cached = AGENTS_DIR / "bin" / name
    if os.access(cached, os.X_OK) and cached.resolve().is_file():
        return str(cached)
    return shutil.which(name, path=_PATH)


def require_cli(name: str) -> str:
    """The CLI's executable, or skip (fail under CI) saying how to install it."""
    found = find_cli(name)
    if found is None:
        _missing(
            f"agent CLI {name!r} is not installed (looked in {AGENTS_DIR / 'bin'} and on PATH); "
            "run `bash .ci/install-agents`"
        )
    assert found is not None
    return found


def require_bwrap() -> str:
    found = shutil.which("bwrap", path=_PATH)
    if found is None:
        _missing("bubblewrap (bwrap) is not installed; run `apt-get install -y bubblewrap`")
    assert found is not None
    return found


def box_argv(
    argv: Sequence[str], *, workspace: Path, home: Path, env: Mapping[str, str], bwrap: str = "bwrap"
) -> list[str]:
    """`argv` inside a bubblewrap box as ralph runs agents: the whole filesystem read-only but for the
    workspace and the HOME, a private /tmp, its own namespaces but the network (the model is on
    127.0.0.1), a clean environment holding exactly `env`, and the workspace as working directory."""
    box = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    box += ["--bind", str(workspace), str(workspace), "--bind", str(home), str(home)]
    box += ["--unshare-all", "--share-net", "--die-with-parent", "--chdir", str(workspace), "--clearenv"]
    for key, value in env.items():
        box += ["--setenv", key, value]
    return [*box, "--", *argv]


@dataclass
class AgentRun:
    """One CLI's non-interactive, allow-everything invocation against a server, inside a box."""

    argv: list[str]
    env: dict[str, str]
    stdin: str | None  # the prompt, when the CLI reads it from stdin
    files: dict[str, str] = field(default_factory=dict)  # written under HOME before the run


def agent_run(name: str, *, url: str, home: Path, prompt: str, prompt_file: Path | None = None) -> AgentRun:
    """How `name` runs against the scripted server at `url` with everything allowed, as FACTS.md
    records it; `home` is the CLI's private HOME, where its settings files go."""
    binary = require_cli(name)
    bin_dir = str(Path(binary).parent)
    env = {
        "HOME": str(home),
        "PATH": f"{bin_dir}:{BOX_PATH}",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        **GIT_IDENTITY,
    }
    if name == "claude":
        # IS_SANDBOX=1: as root, Claude Code refuses bypassPermissions unless told it is sandboxed.
        env.update(
            ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY="sk-scripted", IS_SANDBOX="1", DISABLE_AUTOUPDATER="1"
        )
        argv = [
            binary,
            "-p",
            "--verbose",
            "--output-format",
            "stream-json",
            "--permission-mode",
            "bypassPermissions",
        ]
        return AgentRun(argv, env, prompt)
    if name == "codex":
        # A provider is the only way to a custom endpoint; a model with metadata gets the standard tools.
        config = (
            'model = "gpt-5.5"\nmodel_provider = "scripted"\n\n'
            '[model_providers.scripted]\nname = "scripted"\n'
            f'base_url = "{url}/v1"\nenv_key = "SCRIPTED_API_KEY"\nwire_api = "responses"\n'
        )
        env.update(CODEX_HOME=str(home / ".codex"), SCRIPTED_API_KEY="sk-scripted")
        argv = [binary, "exec", "--json", "--dangerously-bypass-approvals-and-sandbox", "-"]
        return AgentRun(argv, env, prompt, {".codex/config.toml": config})
    if name == "gemini":
        settings = json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}})
        env.update(GEMINI_API_KEY="scripted-key", GOOGLE_GEMINI_BASE_URL=url)
        argv = [binary, "--skip-trust", "--approval-mode", "yolo", "--output-format", "stream-json"]
        return AgentRun(argv, env, prompt, {".gemini/settings.json": settings})
    if name == "opencode":
        config = {
            "$schema": "https://opencode.ai/config.json",
            "provider": {
                "scripted": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "Scripted",
                    "options": {"baseURL": f"{url}/v1", "apiKey": "sk-scripted"},
                    "models": {"scripted-model": {"name": "Scripted model"}},
                }
            },
            "model": "scripted/scripted-model",
            "permission": {"*": "allow"},
            "autoupdate": False,
            "share": "disabled",
        }
        env.update(OPENCODE_DISABLE_AUTOUPDATE="1", OPENCODE_DISABLE_MODELS_FETCH="1")
        argv = [binary, "run", "--format", "json"]
        return AgentRun(argv, env, prompt, {".config/opencode/opencode.json": json.dumps(config, indent=2)})
    if name == "aider":
        assert prompt_file is not None, "aider reads its prompt from a file"
        prompt_file.write_text(prompt)
        env.update(OPENAI_API_BASE=f"{url}/v1", OPENAI_API_KEY="sk-scripted")
        argv = [binary, "--message-file", str(prompt_file), "--yes-always", "--no-auto-commits"]
        argv += ["--no-dirty-commits", "--no-gitignore", "--no-analytics", "--no-check-update"]
        argv += ["--no-show-release-notes", "--no-fancy-input", "--no-pretty", "--no-detect-urls"]
        argv += [
            "--disable-playwright",
            "--chat-history-file",
            "/dev/null",
            "--input-history-file",
            "/dev/null",
        ]
        argv += ["--model", "openai/scripted-model"]
        return AgentRun(argv, env, None)
    raise ValueError(f"unknown agent CLI {name!r}; known: {', '.join(CLIS)}")


def write_home_files(home: Path, files: Mapping[str, str]) -> None:
    for relative, text in files.items():
        path = home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
