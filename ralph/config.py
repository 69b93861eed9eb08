"""`.ralph/config.toml`: every key optional, unknown keys refused (README: "Configuration").

Where it does not exist, the Rust ralph's `.ralph/config.jsonc` is read instead (ralph.rust_config).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, get_args

import tomli_w
from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator, model_validator

from ralph import rust_config
from ralph.constants import RUNNER_NAMES
from ralph.errors import ConfigError
from ralph.files import FileTooLarge, read_bounded
from ralph.models import FileModel, Text, describe_validation_error, no_nul
from ralph.nesting import TooDeep, check_depth
from ralph.paths import DEFAULT_WORKSPACE_ROOT

RunnerName = Literal["claude", "codex", "gemini", "opencode", "aider", "command"]
assert get_args(RunnerName) == RUNNER_NAMES  # one list, spelled twice only for the type checker

PositiveInt = Annotated[int, Field(ge=1)]
# Upper bounds: a count of 10**9 is a typo, and would only surface as a tick that never ends.
Count = Annotated[int, Field(ge=1, le=10_000)]
Slots = Annotated[int, Field(ge=1, le=256)]
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
    workers: Slots = 3
    workspace_root: NonEmptyText = DEFAULT_WORKSPACE_ROOT
    max_push_attempts: Count = 50
    push_backoff_ms: Annotated[list[BackoffMs], Field(min_length=1)] = [500, 2000, 5000, 10000]
    terminal_worker_ttl_hours: Hours = 24
    workspace_retention_hours: Annotated[float, Field(ge=0, le=_YEAR_HOURS, allow_inf_nan=False)] = 24
    tick_budget_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 45
    # DESIGN §4.2: a job past its deadline gets SIGTERM, then SIGKILL this many seconds later.
    kill_grace_seconds: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 10
    # Each log ralph keeps (a task's agent.log and ci.log, events.jsonl) is rotated past this size,
    # keeping one older copy (<name>.1): bounded disk use on a host nobody watches.
    log_max_bytes: Annotated[int, Field(ge=64 * 1024, le=1 << 40)] = 10 * 1024 * 1024
    ignored_file_allowlist: list[NonEmptyText] = []


# An environment variable's name, as POSIX shells spell one.
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
Dollars = Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]


class PricePerMtok(FileModel):
    """US dollars per million tokens, for a runner that reports tokens but not cost."""

    input: Annotated[float, Field(ge=0, le=10_000, allow_inf_nan=False)]
    output: Annotated[float, Field(ge=0, le=10_000, allow_inf_nan=False)]
    # Input read from a cache, when the provider prices it apart (None: at the input price).
    cached_input: Annotated[float, Field(ge=0, le=10_000, allow_inf_nan=False)] | None = None


class AgentConfig(FileModel):
    runner: RunnerName = "claude"
    model: Text = ""  # empty: the runner's own default
    binary: Text = ""  # empty: the runner's usual executable name, looked up on PATH
    command: Argv = []  # runner = "command": argv with {prompt_file} {task_id} {workspace} {model}
    extra_args: Argv = []  # appended to a preset runner's argv
    # A model endpoint (a gateway, a proxy, a local model) every preset is pointed at, without its
    # /v1: claude and gemini by their variables, codex and opencode by settings written into the job's
    # private HOME, aider by OPENAI_API_BASE. api_key_env names ralph's variable holding its key.
    base_url: Annotated[str, Field(pattern=r"^(https?://[^\s]+)?$")] = ""
    api_key_env: Annotated[str, Field(pattern=r"^([A-Za-z_][A-Za-z0-9_]{0,127})?$")] = ""
    # Set for the agent (wins over a name passed through by sandbox.env_passthrough); a value may name
    # a variable of ralph's own environment as ${NAME}.
    env: dict[EnvName, Text] = {}
    timeout_minutes: Minutes = 60
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 3
    max_remediations: Annotated[int, Field(ge=0, le=100)] = 3
    retry_backoff_minutes: Annotated[list[BackoffMinutes], Field(min_length=1, max_length=100)] = [5, 30]
    price_per_mtok: PricePerMtok | None = None  # cost from tokens, when the runner reports no cost
    max_cost_usd_per_task: Dollars | None = None  # stop a task whose agent runs cost more

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
    # true: a rebased train is gated again; "overlap": only when outside commits touch its files.
    verify_rebased: bool | Literal["overlap"] = True
    max_parallel: Slots | None = None  # gate jobs at once; None: --workers
    watch_base: bool | None = None  # gate a base tip ralph did not push; None: on when a gate is set
    base_status_command: Argv = []  # argv told a sha ({sha}); exit 0 green, 1 red, else unknown


class HooksConfig(FileModel):
    after_create: Argv = []  # argv run in a new workspace
    on_event: Argv = []  # argv run on landed/failed/blocked with RALPH_* env
    timeout_seconds: Annotated[int, Field(ge=1, le=24 * 3600)] = 300


class SandboxConfig(FileModel):
    mode: Literal["bwrap", "none"] = "bwrap"  # "none" runs jobs as ralph itself: see README "Security"
    env_passthrough: list[EnvName] = []  # names copied from ralph's environment into every job
    home_files: list[NonEmptyText] = []  # files under ~ copied into a job's private HOME
    hide_paths: list[NonEmptyText] = []  # more paths no job may see (~/.aws, say)
    agent_network: bool = True
    gate_network: bool = True


class LandingConfig(FileModel):
    squash: bool = True  # one commit per task, its tree the gated one; false keeps ungated commits
    max_rebuilds: Annotated[int, Field(ge=1, le=1000)] = 5  # outside pushes before "starved"
    protected_paths: list[NonEmptyText] = []  # globs a task may not change (besides ralph's own)
    allow_paths: list[NonEmptyText] = []  # globs taken back out of the protected set
    max_file_bytes: Annotated[int, Field(ge=1, le=1 << 40)] = 10 * 1024 * 1024


class RunConfig(FileModel):
    follow_jobs: bool = True  # a finished job asks for a tick at once
    offline_spawn: bool = True  # with the remote unreachable, start tasks from the last fetched base


class HostsConfig(FileModel):
    mode: Literal["single", "multi"] = "multi"
    claim_ttl_minutes: Annotated[float, Field(gt=0, le=_WEEK_MINUTES, allow_inf_nan=False)] = 15


class ReportConfig(FileModel):
    html_path: Text = ""  # rewritten by every tick that changed something; relative to the checkout


def _repo_relative(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not path.parts or value.endswith("/"):
        raise ValueError(f"{value!r} must be a file path relative to the repository root, without '..'")
    return value


RepoPath = Annotated[str, Field(min_length=1), AfterValidator(no_nul), AfterValidator(_repo_relative)]


class QueueConfig(FileModel):
    id_prefix: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]{0,15}$")] = "RQ"
    id_width: Annotated[int, Field(ge=1, le=12)] = 4
    # Where the queue and its done archive are, relative to the repository root; None: .ralph/queue.json
    # (or the Rust ralph's .ralph/queue.jsonc when only that exists), and likewise for done.
    file: RepoPath | None = None
    done_file: RepoPath | None = None

    @model_validator(mode="after")
    def _two_files(self) -> QueueConfig:
        if self.file is not None and self.file == self.done_file:
            raise ValueError(f"queue.file and queue.done_file are both {self.file!r}; they must differ")
        return self


class Config(FileModel):
    git: GitConfig = GitConfig()
    parallel: ParallelConfig = ParallelConfig()
    agent: AgentConfig = AgentConfig()
    ci: CiConfig = CiConfig()
    hooks: HooksConfig = HooksConfig()
    queue: QueueConfig = QueueConfig()
    sandbox: SandboxConfig = SandboxConfig()
    landing: LandingConfig = LandingConfig()
    run: RunConfig = RunConfig()
    hosts: HostsConfig = HostsConfig()
    report: ReportConfig = ReportConfig()


MAX_CONFIG_BYTES = 1024 * 1024


def load_config(path: Path) -> Config:
    """Read `path`; a missing file means every default, unless the Rust ralph's config.jsonc is beside
    it: then that is read (config.toml wins when both exist)."""
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES).decode()
        check_depth(text, toml=True)
        raw = tomllib.loads(text)
    except FileNotFoundError:
        rust = path.with_name(RUST_CONFIG_NAME)
        if path.name == CONFIG_NAME and rust.exists():
            return load_rust_config(rust)
        return Config()
    except FileTooLarge as e:
        raise ConfigError(f"{path}: {e}; a config file is a few kilobytes") from None
    except TooDeep as e:
        raise ConfigError(f"{path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(
            f"{path}: not valid TOML: {e}; fix the syntax (README: 'Configuration' lists the keys)"
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


CONFIG_NAME = "config.toml"
RUST_CONFIG_NAME = "config.jsonc"


def load_rust_config(path: Path) -> Config:
    """The Rust ralph's config.jsonc as ralph's configuration; ConfigError for what cannot be carried over.

    Keys with no meaning here are left out (`ralph doctor` lists them); a value that cannot be honoured
    (a runner ralph has no preset for) is refused rather than silently replaced by a default.
    """
    translation = rust_config.translate(rust_config.read(path))
    if translation.problems:
        more = f" (and {len(translation.problems) - 1} more)" if len(translation.problems) > 1 else ""
        raise ConfigError(f"{path}: {translation.problems[0]}{more}")
    return config_from_rust(path, translation)


def config_from_rust(path: Path, translation: rust_config.Translation) -> Config:
    """Validate translated values; an error names the Rust key it came from."""
    try:
        return Config.model_validate(translation.values)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        ours = ".".join(str(part) for part in first["loc"][:2])
        source = translation.sources.get(ours, ours)
        raise ConfigError(
            f"{path}: {source}: {first['msg'].removeprefix('Value error, ')} (got {first.get('input')!r}); "
            "fix it there, or write .ralph/config.toml with `ralph init --from-rust` and fix it in that"
        ) from None


def _known_keys(section: tuple[Any, ...]) -> str:
    """`the keys of [parallel] are: workers, ...` for the table at `section` (() is the top level)."""
    model: type[BaseModel] = Config
    for part in section:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):  # pragma: no cover
            return "README: 'Configuration' lists the keys"
        model = annotation
    if not section:
        return f"the sections are: {', '.join(f'[{name}]' for name in model.model_fields)}"
    return f"the keys of [{'.'.join(map(str, section))}] are: {', '.join(model.model_fields)}"


def render_config(config: Config) -> bytes:
    """TOML for `ralph init`: every key spelled out so a person can see what there is to change."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True)).encode()
