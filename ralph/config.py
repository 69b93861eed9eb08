"""`.ralph/config.toml`: every key optional, unknown keys refused (DESIGN §8)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import tomli_w
from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator, model_validator

from ralph.constants import RUNNER_NAMES
from ralph.errors import ConfigError
from ralph.models import FileModel, Text, describe_validation_error, no_nul
from ralph.paths import DEFAULT_WORKSPACE_ROOT

RunnerName = Literal["claude", "codex", "gemini", "opencode", "aider", "command"]
assert get_args(RunnerName) == RUNNER_NAMES  # one list, spelled twice only for the type checker

PositiveInt = Annotated[int, Field(ge=1)]
NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(no_nul)]
Argv = list[NonEmptyText]

# Durations are finite and bounded: `inf`, `nan` and 1e300 are valid TOML floats, and any of them would
# reach timedelta() or a sleep and crash or hang a tick instead of being refused here with the key named.
_WEEK_MINUTES = 7 * 24 * 60
_YEAR_HOURS = 366 * 24
Minutes = Annotated[float, Field(gt=0, le=_WEEK_MINUTES, allow_inf_nan=False)]
BackoffMinutes = Annotated[float, Field(ge=0, le=_WEEK_MINUTES, allow_inf_nan=False)]
Hours = Annotated[float, Field(gt=0, le=_YEAR_HOURS, allow_inf_nan=False)]
BackoffMs = Annotated[int, Field(ge=0, le=3_600_000)]  # an hour between two pushes is already absurd

# git-check-ref-format(1) plus `git branch`'s own refusals, for a branch or remote name in a config file.
_REF_NAME = re.compile(
    r"(?!-)"  # it would be read as an option
    r"(?!(?:HEAD|@)$)"  # git refuses HEAD as a branch name, and '@' means HEAD
    r"(?!/)(?!.*//)(?!.*\.\.)(?!.*@\{)"
    r"(?!.*(?:^|/)\.)"  # no component may start with '.'
    r"(?!.*\.lock(?:/|$))"  # nor end with '.lock'
    r"[^\x00-\x20~^:?*\[\\\x7f]+"
    r"(?<![./])"
)


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
    workspace_root: NonEmptyText = DEFAULT_WORKSPACE_ROOT
    max_push_attempts: PositiveInt = 50
    push_backoff_ms: Annotated[list[BackoffMs], Field(min_length=1)] = [500, 2000, 5000, 10000]
    terminal_worker_ttl_hours: Hours = 24
    workspace_retention_hours: Annotated[float, Field(ge=0, le=_YEAR_HOURS, allow_inf_nan=False)] = 24
    tick_budget_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 45
    # DESIGN §4.2: a job past its deadline gets SIGTERM, then SIGKILL this many seconds later.
    kill_grace_seconds: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 10
    # Each log ralph keeps (a task's agent.log and ci.log, events.jsonl) is rotated past this size,
    # keeping one older copy (<name>.1): bounded disk use on a host nobody watches.
    log_max_bytes: Annotated[int, Field(ge=64 * 1024)] = 10 * 1024 * 1024
    ignored_file_allowlist: list[NonEmptyText] = []


class AgentConfig(FileModel):
    runner: RunnerName = "claude"
    model: Text = ""  # empty: the runner's own default
    binary: Text = ""  # empty: the runner's usual executable name, looked up on PATH
    command: Argv = []  # runner = "command": argv with {prompt_file} {task_id} {workspace} {model}
    extra_args: Argv = []  # appended to a preset runner's argv
    timeout_minutes: Minutes = 60
    max_attempts: PositiveInt = 3
    max_remediations: Annotated[int, Field(ge=0)] = 3
    retry_backoff_minutes: Annotated[list[BackoffMinutes], Field(min_length=1)] = [5, 30]

    @model_validator(mode="after")
    def _command_needs_argv(self) -> AgentConfig:
        if self.runner == "command" and not self.command:
            raise ValueError(
                'runner = "command" needs agent.command, an argv list such as ["my-agent", "{prompt_file}"]'
            )
        return self


class CiConfig(FileModel):
    command: Argv = ["make", "ci"]  # argv, no shell; [] disables the gate
    timeout_minutes: Minutes = 30
    verify_rebased: bool = True


class HooksConfig(FileModel):
    after_create: Argv = []  # argv run in a new workspace
    on_event: Argv = []  # argv run on landed/failed/blocked with RALPH_* env
    timeout_seconds: Annotated[int, Field(ge=1, le=24 * 3600)] = 300


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
        raise ConfigError(
            f"{path}: not valid TOML: {e}; fix the syntax (see DESIGN §8 for the keys)"
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.start}); save it as UTF-8 TOML") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = tuple(first["loc"])
        if first["type"] == "extra_forbidden":
            # A typo is easiest to see beside the right spelling.
            raise ConfigError(f"{path}: {describe_validation_error(e)}; {_known_keys(loc[:-1])}") from None
        if first["type"] == "model_type":
            # pydantic says "a valid dictionary or instance of ParallelConfig"; a TOML user thinks in tables.
            section = ".".join(map(str, loc))
            raise ConfigError(
                f"{path}: {section}: must be a table, written [{section}] (got {first['input']!r})"
            ) from None
        raise ConfigError(
            f"{path}: {describe_validation_error(e)}; fix that key or remove it for the default"
        ) from None


def _known_keys(section: tuple[Any, ...]) -> str:
    """`the keys of [parallel] are: workers, ...` for the table at `section` (() is the top level)."""
    model: type[BaseModel] = Config
    for part in section:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):  # pragma: no cover
            return "see DESIGN §8 for the keys"
        model = annotation
    if not section:
        return f"the sections are: {', '.join(f'[{name}]' for name in model.model_fields)}"
    return f"the keys of [{'.'.join(map(str, section))}] are: {', '.join(model.model_fields)}"


def render_config(config: Config) -> bytes:
    """TOML for `ralph init`: every key spelled out so a person can see what there is to change."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True)).encode()
