"""Agent runners: the exact argv of every preset, the `command` runner's placeholders, binary
resolution, and the environment jobs get. Fake CLIs are real executables on a PATH of our own."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from harness import SCRIPTED_AGENT, Project
from helpers import executable

from ralph.config import AgentConfig
from ralph.errors import PreflightError
from ralph.runners import PRESETS, Abilities, abilities, build, child_env, resolve_agent, resolve_ci
from ralph.state import Lifecycle

CLAUDE = ["-p", "--verbose", "--output-format", "stream-json"]
CLAUDE_BOXED = [*CLAUDE, "--permission-mode", "bypassPermissions"]
CLAUDE_UNBOXED = [*CLAUDE, "--permission-mode", "acceptEdits"]
CODEX_BOXED = ["exec", "--json", "--dangerously-bypass-approvals-and-sandbox"]
CODEX_UNBOXED = ["exec", "--json", "--sandbox", "workspace-write"]
GEMINI_BOXED = ["--skip-trust", "--approval-mode", "yolo", "--output-format", "stream-json"]
GEMINI_UNBOXED = ["--skip-trust", "--approval-mode", "auto_edit", "--output-format", "stream-json"]
AIDER = [
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
]


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only fake CLIs named like the real ones."""
    directory = tmp_path / "bin"
    for name in ("claude", "codex", "gemini", "opencode", "aider"):
        executable(directory / name)
    monkeypatch.setenv("PATH", str(directory))
    return directory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    return path


def run_build(
    agent: AgentConfig, root: Path, prompt: Path, workspace: Path | None = None, *, boxed: bool = True
) -> Any:
    return build(
        agent,
        prompt_file=prompt,
        task_id="RQ-0007",
        workspace=workspace or root / "ws",
        root=root,
        boxed=boxed,
    )


# (runner, model, extra_args, boxed, expected argv after the binary, prompt on stdin)
CASES = [
    ("claude", "", [], True, CLAUDE_BOXED, True),
    ("claude", "", [], False, CLAUDE_UNBOXED, True),
    (
        "claude",
        "opus",
        ["--max-turns", "40"],
        True,
        [*CLAUDE_BOXED, "--model", "opus", "--max-turns", "40"],
        True,
    ),
    # A permission flag of the user's own replaces the preset's (the CLI would refuse both).
    ("claude", "", ["--permission-mode", "plan"], False, [*CLAUDE, "--permission-mode", "plan"], True),
    ("codex", "", [], True, [*CODEX_BOXED, "-"], True),
    ("codex", "", [], False, [*CODEX_UNBOXED, "-"], True),
    ("codex", "gpt-5", ["-c", "x=1"], True, [*CODEX_BOXED, "--model", "gpt-5", "-c", "x=1", "-"], True),
    (
        "codex",
        "",
        ["--sandbox", "danger-full-access"],
        False,
        ["exec", "--json", "--sandbox", "danger-full-access", "-"],
        True,
    ),
    ("codex", "", ["--sandbox=read-only"], True, ["exec", "--json", "--sandbox=read-only", "-"], True),
    ("gemini", "", [], True, GEMINI_BOXED, True),
    ("gemini", "", [], False, GEMINI_UNBOXED, True),
    ("gemini", "", ["--yolo"], False, ["--skip-trust", "--output-format", "stream-json", "--yolo"], True),
    (
        "gemini",
        "gemini-2.5-pro",
        ["--debug"],
        True,
        [*GEMINI_BOXED, "--model", "gemini-2.5-pro", "--debug"],
        True,
    ),
    ("opencode", "", [], True, ["run", "--format", "json"], True),
    (
        "opencode",
        "anthropic/sonnet",
        ["--agent", "build"],
        False,
        ["run", "--format", "json", "--model", "anthropic/sonnet", "--agent", "build"],
        True,
    ),
    ("aider", "", [], True, ["--message-file", "{prompt}", *AIDER], False),
    (
        "aider",
        "sonnet",
        ["--no-git"],
        False,
        ["--message-file", "{prompt}", *AIDER, "--model", "sonnet", "--no-git"],
        False,
    ),
]


def test_presets_keep_cli_update_checks_quiet(bin_dir: Path, root: Path) -> None:
    invocations = {
        runner: run_build(AgentConfig(runner=runner), root, root / "p.md", boxed=False)  # type: ignore[arg-type]
        for runner in PRESETS
    }
    # claude and opencode are told by their environment, aider by a flag; codex and gemini by nothing.
    assert {r: i.env for r, i in invocations.items()} == {
        "claude": {"DISABLE_AUTOUPDATER": "1"},
        "codex": {},
        "gemini": {},
        "opencode": {"OPENCODE_DISABLE_AUTOUPDATE": "1"},
        "aider": {},
    }
    assert "--no-check-update" in invocations["aider"].argv


def test_claude_is_told_it_is_sandboxed_only_inside_the_box(bin_dir: Path, root: Path) -> None:
    """As root it refuses to skip permissions unless IS_SANDBOX says a sandbox contains it."""
    boxed = run_build(AgentConfig(runner="claude"), root, root / "p.md", boxed=True)
    unboxed = run_build(AgentConfig(runner="claude"), root, root / "p.md", boxed=False)
    assert boxed.env == {"DISABLE_AUTOUPDATER": "1", "IS_SANDBOX": "1"}
    assert "IS_SANDBOX" not in unboxed.env


@pytest.mark.parametrize(("runner", "model", "extra", "boxed", "expected", "stdin"), CASES)
def test_preset_argv(
    bin_dir: Path,
    root: Path,
    runner: str,
    model: str,
    extra: list[str],
    boxed: bool,
    expected: list[str],
    stdin: bool,
) -> None:
    prompt = root / "prompt.md"
    agent = AgentConfig(runner=runner, model=model, extra_args=extra)  # type: ignore[arg-type]
    invocation = run_build(agent, root, prompt, boxed=boxed)
    want = [str(bin_dir / runner), *(str(prompt) if a == "{prompt}" else a for a in expected)]
    assert invocation.argv == want
    assert invocation.prompt_on_stdin is stdin
    # The prompt travels by stdin or by its file; a runner that reads the file is handed its path.
    assert (str(prompt) in invocation.argv) is (not stdin)


@pytest.mark.parametrize(
    ("runner", "boxed", "run_commands", "commit"),
    [
        ("claude", True, True, True),
        ("claude", False, False, False),
        ("codex", True, True, True),
        ("codex", False, True, False),  # its own sandbox runs commands but keeps .git read-only
        ("gemini", True, True, True),
        ("gemini", False, False, False),
        ("opencode", False, True, True),
        ("aider", True, False, False),
        ("command", False, True, True),
    ],
)
def test_abilities_follow_the_mode_each_cli_runs_in(
    runner: str, boxed: bool, run_commands: bool, commit: bool
) -> None:
    agent = AgentConfig(runner=runner, command=["x"])  # type: ignore[arg-type]
    assert abilities(agent, boxed=boxed) == Abilities(run_commands=run_commands, commit=commit)


def test_binary_overrides_the_preset_name(bin_dir: Path, root: Path) -> None:
    custom = executable(bin_dir / "claude-nightly")
    invocation = run_build(AgentConfig(runner="claude", binary="claude-nightly"), root, root / "p.md")
    assert invocation.argv == [str(custom), *CLAUDE_BOXED]


def test_binary_may_be_an_absolute_or_home_relative_path(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    tool = executable(tmp_path / "opt" / "codex")
    assert resolve_agent(AgentConfig(runner="codex", binary=str(tool)), root) == str(tool)
    home_tool = executable(Path(os.environ["HOME"]) / "bin" / "gemini")
    assert resolve_agent(AgentConfig(runner="gemini", binary="~/bin/gemini"), root) == str(home_tool)


def test_a_missing_agent_binary_names_runner_binary_path_and_the_key(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(PreflightError) as e:
        resolve_agent(AgentConfig(runner="claude"), root)
    assert str(e.value) == (
        f"agent runner 'claude': 'claude' is not an executable on PATH ({empty}); "
        "install it, or set agent.binary to its absolute path"
    )
    with pytest.raises(PreflightError) as e:
        resolve_agent(AgentConfig(runner="aider", binary="aider-pinned"), root)
    assert str(e.value) == (
        f"agent runner 'aider': 'aider-pinned' is not an executable on PATH ({empty}); "
        "install it, or set agent.binary to its absolute path"
    )


def test_a_file_that_is_not_executable_does_not_resolve(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "claude").write_text("#!/bin/sh\n")  # mode 644
    monkeypatch.setenv("PATH", str(directory))
    with pytest.raises(
        PreflightError, match=r"^agent runner 'claude': 'claude' is not an executable on PATH"
    ):
        resolve_agent(AgentConfig(runner="claude"), root)


def test_resolve_ci(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert resolve_ci([], root) is None
    with pytest.raises(PreflightError) as e:
        resolve_ci(["make", "ci"], root)
    assert str(e.value) == (
        f"the CI command: 'make' is not an executable on PATH ({empty}); "
        "install it, or set ci.command to its absolute path"
    )
    with pytest.raises(PreflightError) as e:
        resolve_ci(["scripts/ci.sh"], root)
    assert str(e.value) == (
        f"the CI command: 'scripts/ci.sh' is not an executable in {root}; "
        "install it, or set ci.command to its absolute path"
    )
    script = executable(root / "scripts" / "ci.sh")
    assert resolve_ci(["scripts/ci.sh", "--all"], root) == str(script)


# --- runner = "command" -------------------------------------------------------------------------------


def test_command_placeholders_expand_inside_argv_elements(root: Path, tmp_path: Path) -> None:
    script = executable(root / "tools" / "agent.sh")
    agent = AgentConfig(
        runner="command",
        model="big-model",
        command=[
            "tools/agent.sh",
            "--prompt={prompt_file}",
            "--task",
            "{task_id}",
            "--cwd={workspace}",
            "--model={model}",
            "{unknown}",
        ],
    )
    prompt = tmp_path / "runs" / "prompt.md"
    invocation = run_build(agent, root, prompt, workspace=tmp_path / "ws")
    assert invocation.argv == [
        str(script),  # a relative path with a slash: a file in the repository, made absolute
        f"--prompt={prompt}",
        "--task",
        "RQ-0007",
        f"--cwd={tmp_path / 'ws'}",
        "--model=big-model",
        "{unknown}",
    ]
    assert invocation.prompt_on_stdin is False


def test_command_without_prompt_file_reads_the_prompt_on_stdin(bin_dir: Path, root: Path) -> None:
    executable(bin_dir / "my-agent")
    invocation = run_build(
        AgentConfig(runner="command", command=["my-agent", "--task={task_id}"]), root, root / "p"
    )
    assert invocation.argv == [str(bin_dir / "my-agent"), "--task=RQ-0007"]
    assert invocation.prompt_on_stdin is True


def test_placeholders_are_expanded_once(bin_dir: Path, root: Path, tmp_path: Path) -> None:
    """A value that contains a placeholder's spelling (a path, say) is used as it is."""
    executable(bin_dir / "my-agent")
    workspace = tmp_path / "odd{model}dir"
    agent = AgentConfig(
        runner="command", model="m1", command=["my-agent", "--ws={workspace}", "{prompt_file}"]
    )
    invocation = run_build(agent, root, tmp_path / "x{task_id}" / "prompt.md", workspace=workspace)
    assert invocation.argv == [
        str(bin_dir / "my-agent"),
        f"--ws={tmp_path}/odd{{model}}dir",
        f"{tmp_path}/x{{task_id}}/prompt.md",
    ]


def test_task_text_never_reaches_argv(project: Project) -> None:
    """Through a real tick: the scripted agent records the argv and env it was started with (in its
    workspace: inside its box it can write nowhere else)."""
    canary = "canary-was-touched"  # relative: a shell that ran it would make it in the workspace
    title = f"--dangerously-skip-permissions $(touch {canary}) `touch {canary}`; rm -rf ~"
    task_id = project.add(
        title, description="scripted-agent: record .ralph/cache/record.json\nsecret words in the body"
    )
    project.tick()
    project.wait_for_jobs()
    ws = Path(project.worker(task_id).workspace_path)
    seen = json.loads((ws / ".ralph" / "cache" / "record.json").read_text())
    prompt_file = project.paths.run_dir(task_id) / "prompt.md"
    assert seen["argv"] == [str(SCRIPTED_AGENT), str(prompt_file)]
    assert title in seen["prompt"] and "secret words in the body" in seen["prompt"]
    assert seen["env"]["RALPH_TASK_ID"] == task_id
    assert seen["cwd"] == str(ws)
    assert not (ws / canary).exists()
    assert not (project.control / canary).exists()
    assert project.worker(task_id).lifecycle is Lifecycle.RUNNING


# --- the environment of a job -------------------------------------------------------------------------


def test_child_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "RALPH_QUEUE_PATH": "/control/.ralph/queue.json",
        "RALPH_TASK_ID": "RQ-9999",
        "RALPH_CRASHPOINT": "after-load",
        "GIT_DIR": "/control/.git",
        "GIT_WORK_TREE": "/control",
        "GIT_INDEX_FILE": "/control/.git/index",
        "GIT_OBJECT_DIRECTORY": "/control/.git/objects",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": "/control/.git/objects",
        "GIT_COMMON_DIR": "/control/.git",
        "GIT_PREFIX": "sub/",
        "GIT_NAMESPACE": "ns",
        "GIT_QUARANTINE_PATH": "/control/.git/objects/incoming-x",
        "KEEP_ME": "1",
        "GIT_AUTHOR_NAME": "Kept Author",
    }.items():
        monkeypatch.setenv(key, value)
    env = child_env(task_id="RQ-0001", workspace="/ws/RQ-0001", base_branch="main")
    assert {k: v for k, v in env.items() if k.startswith("RALPH_")} == {
        "RALPH_TASK_ID": "RQ-0001",
        "RALPH_WORKSPACE": "/ws/RQ-0001",
        "RALPH_BASE_BRANCH": "main",
    }
    removed = (
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_PREFIX",
        "GIT_NAMESPACE",
        "GIT_QUARANTINE_PATH",
    )
    assert [k for k in removed if k in env] == []
    assert env["KEEP_ME"] == "1"
    assert env["GIT_AUTHOR_NAME"] == "Kept Author"
    assert env["PATH"] == os.environ["PATH"]
    assert os.environ["RALPH_TASK_ID"] == "RQ-9999"  # the parent's own environment is untouched


def test_opencode_pointed_at_an_endpoint_names_its_model_through_ralph_s_provider(
    bin_dir: Path, root: Path, tmp_path: Path
) -> None:
    """Found driving the real opencode through ralph: `--model scripted-model` (no provider) made it
    fail with "Unexpected server error"; the model lives in the provider ralph writes (ralph.home)."""
    agent = AgentConfig(runner="opencode", model="scripted-model", base_url="http://127.0.0.1:9")
    argv = run_build(agent, root, tmp_path / "p.md").argv
    assert argv[argv.index("--model") + 1] == "ralph/scripted-model"
    # A model that names its provider, or no endpoint of ralph's, is passed as it is.
    for given in (
        agent.model_copy(update={"model": "anthropic/claude-x"}),
        agent.model_copy(update={"base_url": ""}),
    ):
        argv = run_build(given, root, tmp_path / "p.md").argv
        assert argv[argv.index("--model") + 1] == given.model
