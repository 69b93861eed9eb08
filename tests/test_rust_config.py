"""The Rust ralph's `.ralph/config.jsonc`: honoured where config.toml is absent, translated by
`ralph init --from-rust`, and every key with no meaning here named once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ralph
from rust_formats import rust_file, rust_task

from ralph import rust_config
from ralph.checkout import open_checkout
from ralph.config import load_config
from ralph.errors import ConfigError

CONFIG_JSONC = """{
  // The Rust ralph's project config (version 2), with comments and a trailing comma.
  "version": 2,
  "queue": {
    "file": ".ralph/tasks/queue.jsonc",
    "done_file": ".ralph/tasks/done.jsonc",
    "id_prefix": "ops",
    "id_width": 3,
    "size_warning_threshold_kb": 500,
  },
  "agent": {
    "runner": "claude",
    "model": "sonnet",
    "claude_bin": "/opt/claude/bin/claude",
    "codex_bin": "codex-nightly",
    "ci_gate": {"enabled": true, "argv": ["make", "agent-ci"]},
    "phases": 3,
    "git_publish_mode": "commit_and_push",
  },
  "parallel": {
    "workers": 2, "max_push_attempts": 10, "push_backoff_ms": [100, 200], "workspace_retention_hours": 12
  },
  "loop": {"wait_when_empty": true},
  "profiles": {"fast": {"phases": 1}},
}
"""


def write(root: Path, text: str = CONFIG_JSONC, name: str = "config.jsonc") -> Path:
    (root / ".ralph").mkdir(exist_ok=True)
    path = root / ".ralph" / name
    path.write_text(text)
    return path


def test_config_jsonc_is_honoured_where_config_toml_is_absent(tmp_path: Path) -> None:
    """It used to be ignored silently: `make ci` instead of the configured gate, the RQ prefix, the
    default files (so the real queue was invisible)."""
    write(tmp_path)
    config = load_config(tmp_path / ".ralph" / "config.toml")
    assert config.ci.command == ["make", "agent-ci"]
    assert (config.agent.runner, config.agent.model, config.agent.binary) == (
        "claude",
        "sonnet",
        "/opt/claude/bin/claude",
    )
    assert (config.queue.id_prefix, config.queue.id_width) == ("OPS", 3)
    assert (config.queue.file, config.queue.done_file) == (
        ".ralph/tasks/queue.jsonc",
        ".ralph/tasks/done.jsonc",
    )
    assert (config.parallel.workers, config.parallel.max_push_attempts) == (2, 10)
    assert config.parallel.push_backoff_ms == [100, 200]
    assert config.parallel.workspace_retention_hours == 12


def test_keys_with_no_meaning_here_are_listed_once(tmp_path: Path) -> None:
    assert rust_config.unmapped(write(tmp_path)) == [
        "queue.size_warning_threshold_kb",
        "agent.codex_bin",
        "agent.phases",
        "agent.git_publish_mode",
        "loop",
        "profiles",
    ]
    assert rust_config.unmapped(tmp_path / "missing.jsonc") == []


def test_config_toml_wins_when_both_exist(tmp_path: Path) -> None:
    write(tmp_path)
    write(tmp_path, '[ci]\ncommand = ["make", "ci"]\n', "config.toml")
    assert load_config(tmp_path / ".ralph" / "config.toml").ci.command == ["make", "ci"]


@pytest.mark.parametrize(
    ("agent", "ci"),
    [
        ({"ci_gate": {"enabled": False, "argv": ["make", "agent-ci"]}}, []),
        ({"ci_gate": {"enabled": True}}, ["make", "ci"]),
        ({}, ["make", "ci"]),
    ],
)
def test_the_ci_gate(tmp_path: Path, agent: dict[str, object], ci: list[str]) -> None:
    write(tmp_path, json.dumps({"version": 2, "agent": agent}))
    config = load_config(tmp_path / ".ralph" / "config.toml")
    assert config.ci.command == ci
    assert config.agent.runner == "codex"  # the Rust ralph's default runner, not ralph's claude


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"agent": {"runner": "pi"}}', "agent.runner: 'pi' has no preset here"),
        (
            '{"agent": {"runer": "codex"}}',
            "agent.runer: not a key of the Rust ralph's config either (a typo?)",
        ),
        (
            '{"parallel": {"max_push_attempts": 0}}',
            "parallel.max_push_attempts: Input should be greater than or equal to 1",
        ),
        (
            '{"queue": {"file": "../elsewhere.jsonc"}}',
            "queue.file: '../elsewhere.jsonc' must be a file path relative",
        ),
        ("{ broken", "not valid JSONC: line 1 column 9: expected ':' after the key 'broken'"),
        ("[]", "must be a JSON object"),
    ],
)
def test_what_cannot_be_honoured_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / ".ralph" / "config.toml")
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# --- a repository the Rust ralph set up --------------------------------------------------------------


@pytest.fixture
def rust_repo(control: Path) -> Path:
    """The control clone as the Rust ralph leaves one: config.jsonc with custom queue paths and id
    format, queue.jsonc and done.jsonc in its layout, nothing of ralph's own."""
    write(control)
    tasks = control / ".ralph" / "tasks"
    tasks.mkdir()
    (tasks / "queue.jsonc").write_bytes(
        rust_file(rust_task("OPS-004"), rust_task("OPS-005", depends_on=["OPS-002"]))
    )
    (tasks / "done.jsonc").write_bytes(
        rust_file(rust_task("OPS-002", status="done"), rust_task("OPS-003", status="rejected"))
    )
    return control


def test_the_custom_queue_is_the_one_read(rust_repo: Path) -> None:
    """`queue validate` said "ok: 0 tasks" while the real queue was invisible."""
    result = ralph(rust_repo, "queue", "validate")
    assert (result.exit_code, result.stdout) == (
        0,
        "ok: 2 tasks in .ralph/tasks/queue.jsonc, 2 tasks in .ralph/tasks/done.jsonc\n",
    ), result.output
    assert open_checkout(rust_repo).paths.queue_file() == rust_repo / ".ralph" / "tasks" / "queue.jsonc"


def test_task_add_uses_the_id_prefix_and_width_and_the_custom_file(rust_repo: Path) -> None:
    before = (rust_repo / ".ralph" / "tasks" / "queue.jsonc").read_bytes()
    result = ralph(rust_repo, "task", "add", "Third", "--no-push")
    assert (result.exit_code, result.stdout) == (0, "OPS-006\n"), result.output
    after = (rust_repo / ".ralph" / "tasks" / "queue.jsonc").read_bytes()
    assert after.endswith(before[before.index(b"    {") :])  # the new task first; the rest as it was
    assert not (rust_repo / ".ralph" / "queue.json").exists()


def test_plain_init_keeps_the_rust_config_and_writes_no_toml_over_it(rust_repo: Path) -> None:
    result = ralph(rust_repo, "init")
    assert result.exit_code == 0, result.output
    assert "kept .ralph/config.jsonc (the Rust ralph's; ralph reads it as it is" in result.stdout
    assert not (rust_repo / ".ralph" / "config.toml").exists()
    assert "kept .ralph/tasks/queue.jsonc (already there)" in result.stdout
    assert not (rust_repo / ".ralph" / "queue.json").exists()


def test_init_from_rust_writes_the_equivalent_toml_and_says_what_it_left(rust_repo: Path) -> None:
    result = ralph(rust_repo, "init", "--from-rust")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "created .ralph/config.toml" in lines
    assert (
        "not carried over (they mean nothing here): queue.size_warning_threshold_kb, agent.codex_bin, "
        "agent.phases, agent.git_publish_mode, loop, profiles"
    ) in lines
    toml = load_config(rust_repo / ".ralph" / "config.toml")
    assert toml == load_config(rust_repo / ".ralph" / "config.toml")
    assert toml.ci.command == ["make", "agent-ci"]
    assert (toml.queue.id_prefix, toml.queue.file, toml.agent.model) == (
        "OPS",
        ".ralph/tasks/queue.jsonc",
        "sonnet",
    )
    assert toml.git.base_branch == "main"
    again = ralph(rust_repo, "init", "--from-rust")
    assert again.exit_code == 1
    assert "config.toml exists already" in again.stderr


def test_init_from_rust_with_a_runner_ralph_lacks_writes_a_command_placeholder(control: Path) -> None:
    write(control, '{"version": 2, "agent": {"runner": "pi", "model": "gpt-5.3"}}')
    result = ralph(control, "init", "--from-rust")
    assert result.exit_code == 0, result.output
    assert "not carried over: agent.runner: 'pi' has no preset here" in result.stdout
    assert "edit agent.command in .ralph/config.toml: it is a placeholder" in result.stdout
    config = load_config(control / ".ralph" / "config.toml")
    assert (config.agent.runner, config.agent.model) == ("command", "gpt-5.3")
    chosen = ralph(control, "init", "--from-rust", "--runner", "codex")
    assert chosen.exit_code == 1  # config.toml exists now; nothing is overwritten


def test_init_from_rust_without_a_rust_config_is_refused(control: Path) -> None:
    result = ralph(control, "init", "--from-rust")
    assert result.exit_code == 1
    assert result.stderr == (
        "ralph: error: .ralph/config.jsonc does not exist: "
        "--from-rust reads the Rust ralph's config from there\n"
    )
    assert not (control / ".ralph").exists()


def test_a_real_rust_config_loads(tmp_path: Path) -> None:
    """The Rust repository's own config.jsonc (pi runner) is refused with the way out; codex is read."""
    text = (
        '{\n  "agent": {\n    "ci_gate": {\n      "argv": [\n        "make",\n        "agent-ci"\n      ],\n'
        '      "enabled": true\n    },\n    "git_publish_mode": "commit_and_push",\n    "runner": "pi",\n'
        '    "model": "openai-codex/gpt-5.5:high",\n    "phases": 3\n  },\n  "version": 2\n}'
    )
    write(tmp_path, text)
    with pytest.raises(ConfigError, match="ralph init --from-rust"):
        load_config(tmp_path / ".ralph" / "config.toml")
    write(tmp_path, text.replace('"pi"', '"codex"'))
    config = load_config(tmp_path / ".ralph" / "config.toml")
    assert (config.agent.runner, config.agent.model, config.ci.command) == (
        "codex",
        "openai-codex/gpt-5.5:high",
        ["make", "agent-ci"],
    )
