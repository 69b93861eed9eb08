"""The Rust ralph's `.ralph/config.jsonc`, translated into ralph's configuration.

A repository the Rust ralph managed keeps working unchanged: where `.ralph/config.toml` does not exist,
`config.jsonc` is read instead, and every key that means something here is carried over (the CI gate
argv, the queue's files and id format, the runner and its model, the parallel settings). A key that
means nothing here (phases, webhooks, profiles, ...) is named by `unmapped`, for `ralph doctor` and
`ralph init --from-rust` to say once. A key the Rust ralph itself would refuse is refused.

This module only translates (JSONC in, a dict shaped like config.toml out); ralph.config validates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ralph import jsonc
from ralph.errors import ConfigError
from ralph.files import FileTooLarge, read_bounded

MAX_RUST_CONFIG_BYTES = 1024 * 1024

# Every key of the Rust ralph's config (its schemas/config.schema.json, v0.4): the value says where it
# goes here, or None for a key with no meaning here. A table whose keys are all listed is walked;
# "*" takes the whole value as one key.
_KEYS: dict[str, Any] = {
    "version": "",  # the file format's version: nothing to carry
    "project_type": None,
    "queue": {
        "file": "queue.file",
        "done_file": "queue.done_file",
        "id_prefix": "queue.id_prefix",
        "id_width": "queue.id_width",
        "size_warning_threshold_kb": None,
        "task_count_warning_threshold": None,
        "max_dependency_depth": None,
        "auto_archive_terminal_after_days": None,
        "aging_thresholds": None,
    },
    "agent": {
        "runner": "agent.runner",
        "model": "agent.model",
        "ci_gate": {"enabled": "ci.command", "argv": "ci.command"},
        **dict.fromkeys(
            ("codex_bin", "opencode_bin", "gemini_bin", "claude_bin", "cursor_bin", "kimi_bin", "pi_bin"),
            "agent.binary",
        ),
        **dict.fromkeys(
            (
                "reasoning_effort",
                "iterations",
                "followup_reasoning_effort",
                "phases",
                "claude_permission_mode",
                "runner_cli",
                "phase_overrides",
                "instruction_files",
                "repoprompt_plan_required",
                "repoprompt_tool_injection",
                "git_revert_mode",
                "git_publish_mode",
                "notification",
                "webhook",
                "session_timeout_hours",
                "scan_prompt_version",
                "runner_retry",
            )
        ),
    },
    "parallel": {
        "workers": "parallel.workers",
        "workspace_root": "parallel.workspace_root",
        "max_push_attempts": "parallel.max_push_attempts",
        "push_backoff_ms": "parallel.push_backoff_ms",
        "workspace_retention_hours": "parallel.workspace_retention_hours",
        "ignored_file_allowlist": "parallel.ignored_file_allowlist",
    },
    "loop": None,
    "plugins": None,
    "profiles": None,
}

# The runners both have, by the Rust ralph's name.
_RUNNERS = {"codex": "codex", "claude": "claude", "gemini": "gemini", "opencode": "opencode"}
# The Rust ralph's runner when its config names none.
RUST_DEFAULT_RUNNER = "codex"


@dataclass
class Translation:
    """config.jsonc as ralph's configuration: `values` shaped like config.toml; `unmapped` the Rust keys
    with no meaning here (dotted, each once); `problems` values that cannot be carried over; `notes`
    where a default differs between the two."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # our dotted key -> the Rust key it came from

    def put(self, dotted: str, value: Any, source: str) -> None:
        section, key = dotted.split(".", 1)
        self.values.setdefault(section, {})[key] = value
        self.sources[dotted] = source


def read(path: Path) -> dict[str, Any]:
    """Parse config.jsonc into a dict; ConfigError naming the file when it is not a JSONC object."""
    try:
        text = read_bounded(path, MAX_RUST_CONFIG_BYTES).decode()
        raw = jsonc.loads(text)
    except FileTooLarge as e:
        raise ConfigError(f"{path}: {e}; a config file is a few kilobytes") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.start}); save it as UTF-8") from None
    except jsonc.JsoncError as e:
        raise ConfigError(f"{path}: not valid JSONC: {e}; fix the syntax") from None
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the Rust ralph's config must be a JSON object, not {type(raw).__name__}")
    return raw


def translate(raw: dict[str, Any]) -> Translation:
    """Carry over every key that has a meaning here; list the rest."""
    out = Translation()
    _walk(raw, _KEYS, "", out)
    written = list(_dotted(raw))
    agent = raw.get("agent") if isinstance(raw.get("agent"), dict) else {}
    assert isinstance(agent, dict)
    _runner(agent, out)
    _ci_gate(agent.get("ci_gate"), out)
    queue = out.values.get("queue", {})
    if isinstance(queue.get("id_prefix"), str):
        queue["id_prefix"] = queue["id_prefix"].strip().upper()  # the Rust ralph's normalize_prefix
    if (
        "parallel" not in raw
        or not isinstance(raw["parallel"], dict)
        or raw["parallel"].get("workers") is None
    ):
        out.notes.append(
            "parallel.workers is not set: the Rust ralph then runs one task at a time (without --parallel); "
            "ralph runs 3 at once unless parallel.workers says otherwise"
        )
    out.unmapped.sort(key=lambda key: written.index(key) if key in written else len(written))
    return out


def _dotted(raw: dict[str, Any], prefix: str = "") -> Any:
    """Every key of `raw`, nested ones too, dotted, in the order written."""
    for key, value in raw.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from _dotted(value, f"{prefix}{key}.")


def _walk(raw: dict[str, Any], known: dict[str, Any], prefix: str, out: Translation) -> None:
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            out.problems.append(
                f"{dotted}: not a key of the Rust ralph's config either (a typo?); remove it or fix its name"
            )
            continue
        target = known[key]
        if value is None or target == "":
            continue  # null is "not set" there; `version` says nothing about what to do
        if target is None:
            out.unmapped.append(dotted)
        elif isinstance(target, dict):
            if not isinstance(value, dict):
                out.problems.append(f"{dotted}: must be an object (got {type(value).__name__})")
            else:
                _walk(value, target, dotted + ".", out)
        elif target in ("agent.runner", "agent.binary", "ci.command"):
            continue  # these depend on each other: _runner and _ci_gate decide
        else:
            out.put(target, value, dotted)


def _runner(agent: dict[str, Any], out: Translation) -> None:
    runner = agent.get("runner")
    name = RUST_DEFAULT_RUNNER if runner is None else runner
    if not isinstance(name, str) or name not in _RUNNERS:
        out.problems.append(
            f"agent.runner: {name!r} has no preset here (ralph runs claude, codex, gemini, opencode, aider, "
            'or any CLI as runner = "command"); write .ralph/config.toml with `ralph init --from-rust` '
            "and choose agent.runner there"
        )
        return
    out.put("agent.runner", _RUNNERS[name], "agent.runner")
    if runner is None:
        out.notes.append("agent.runner is not set: the Rust ralph's default, codex, is used")
    for key, value in agent.items():
        if key.endswith("_bin") and value is not None:
            if key == f"{name}_bin":
                out.put("agent.binary", value, f"agent.{key}")
            else:
                out.unmapped.append(f"agent.{key}")
    if agent.get("model") is None:
        out.notes.append(
            "agent.model is not set: the Rust ralph passes its own default model to the runner; "
            "ralph passes none (the CLI's own default applies): set agent.model to choose one"
        )


def _ci_gate(gate: Any, out: Translation) -> None:
    if not isinstance(gate, dict):
        return  # absent or null: the Rust default, `make ci`, which is ralph's default too
    enabled = gate.get("enabled")
    argv = gate.get("argv")
    if enabled is False:
        out.put("ci.command", [], "agent.ci_gate.enabled")
    elif argv is not None:
        if isinstance(argv, list) and not argv:
            out.problems.append("agent.ci_gate.argv: an empty argv runs nothing; set enabled: false instead")
        else:
            out.put("ci.command", argv, "agent.ci_gate.argv")


def unmapped(path: Path) -> list[str]:
    """The keys of a config.jsonc that mean nothing here, for `ralph doctor` to list once; [] when the
    file does not exist or does not parse (the config check reports that)."""
    try:
        return translate(read(path)).unmapped
    except (ConfigError, FileNotFoundError):
        return []


def shadowed(config_toml: Path) -> Path | None:
    """The config.jsonc beside `config_toml` that is not read because config.toml exists, or None.
    For doctor: a person may still be editing the file that no longer counts."""
    rust = config_toml.with_name("config.jsonc")
    return rust if config_toml.exists() and rust.exists() else None
