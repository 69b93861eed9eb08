"""`.ralph/config.toml`: every key optional, unknown keys refused (DESIGN §8)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import tomli_w
from pydantic import Field, ValidationError, field_validator, model_validator

from ralph.errors import ConfigError
from ralph.models import FileModel, describe_validation_error

RunnerName = Literal["claude", "codex", "gemini", "opencode", "aider", "command"]
RUNNER_NAMES: tuple[str, ...] = ("claude", "codex", "gemini", "opencode", "aider", "command")

PositiveInt = Annotated[int, Field(ge=1)]
Argv = list[Annotated[str, Field(min_length=1)]]

# git-check-ref-format(1), reduced to what a branch or remote name in a config file needs.
_REF_NAME = re.compile(r"(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[^\x00-\x20~^:?*\[\\\x7f]+(?<![./])(?<!\.lock)")


def _check_ref_name(value: str, what: str) -> str:
    if not _REF_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid git {what} name")
    return value


class GitConfig(FileModel):
    remote: str = "origin"
    base_branch: str | None = None  # None: the remote's HEAD branch

    @field_validator("remote")
    @classmethod
    def _remote(cls, value: str) -> str:
        return _check_ref_name(value, "remote")

    @field_validator("base_branch")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        return None if value is None else _check_ref_name(value, "branch")


class ParallelConfig(FileModel):
    workers: PositiveInt = 3
    workspace_root: Annotated[str, Field(min_length=1)] = ".ralph/workspaces"
    max_push_attempts: PositiveInt = 50
    push_backoff_ms: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = [500, 2000, 5000, 10000]
    terminal_worker_ttl_hours: Annotated[float, Field(gt=0)] = 24
    workspace_retention_hours: Annotated[float, Field(ge=0)] = 24
    tick_budget_s: Annotated[float, Field(gt=0)] = 45
    ignored_file_allowlist: list[Annotated[str, Field(min_length=1)]] = []


class AgentConfig(FileModel):
    runner: RunnerName = "claude"
    model: str = ""  # empty: the runner's own default
    binary: str = ""  # empty: the runner's usual executable name, looked up on PATH
    command: Argv = []  # runner = "command": argv with {prompt_file} {task_id} {workspace} {model}
    extra_args: Argv = []  # appended to a preset runner's argv
    timeout_minutes: Annotated[float, Field(gt=0)] = 60
    max_attempts: PositiveInt = 3
    max_remediations: Annotated[int, Field(ge=0)] = 3
    retry_backoff_minutes: Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)] = [5, 30]

    @model_validator(mode="after")
    def _command_needs_argv(self) -> AgentConfig:
        if self.runner == "command" and not self.command:
            raise ValueError('runner = "command" needs agent.command, an argv list such as ["my-agent", "{prompt_file}"]')
        return self


class CiConfig(FileModel):
    command: Argv = ["make", "ci"]  # argv, no shell; [] disables the gate
    timeout_minutes: Annotated[float, Field(gt=0)] = 30
    verify_rebased: bool = True


class HooksConfig(FileModel):
    after_create: Argv = []  # argv run in a new workspace
    on_event: Argv = []  # argv run on landed/failed/blocked with RALPH_* env
    timeout_seconds: PositiveInt = 300


class QueueConfig(FileModel):
    id_prefix: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]{0,15}$")] = "RQ"
    id_width: Annotated[int, Field(ge=1, le=12)] = 4


class Config(FileModel):
    git: GitConfig = GitConfig()
    parallel: ParallelConfig = ParallelConfig()
    agent: AgentConfig = AgentConfig()
    ci: CiConfig = CiConfig()
    hooks: HooksConfig = HooksConfig()
    queue: QueueConfig = QueueConfig()


def load_config(path: Path) -> Config:
    """Read `path`; a missing file means every default."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        return Config()
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}; fix the syntax (see DESIGN §8 for the keys)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {describe_validation_error(e)}; fix that key or remove it for the default") from None


def render_config(config: Config) -> bytes:
    """TOML for `ralph init`: every key spelled out so a person can see what there is to change."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True)).encode()
