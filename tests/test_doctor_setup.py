"""`ralph doctor` on what a checkout needs before any job can do its work: the box every job runs in,
the gate's make target on the base, the agent's credentials and its CLI's version, and what the Rust
ralph may have left (its config.jsonc, its lock, a .gitignore without .ralph/cache/). Real git and
files; the CLIs and bwrap are scripts standing in for programs we do not own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import BASE, git
from harness import SCRIPTED_AGENT, Project, make_project
from helpers import executable
from test_doctor import report

from ralph import makefile
from ralph.commands.doctor import CRON_PATH
from ralph.errors import ExitCode
from ralph.runners import TESTED_CLIS
from ralph.state import new_state, save_state

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    return tmp_path / "bin"


@pytest.fixture
def project(origin: Path, control: Path, bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """As test_doctor's healthy project, with a directory of stand-in programs first on PATH."""
    bin_dir.mkdir()
    git_dir = os.path.dirname(shutil.which("git") or "/usr/bin/git")
    monkeypatch.setenv("PATH", ":".join(dict.fromkeys([str(bin_dir), git_dir, *CRON_PATH.split(":")])))
    return make_project(
        origin, control, agent={"command": [sys.executable, str(SCRIPTED_AGENT), "{prompt_file}"]}
    )


def check(project: Project, capsys: pytest.CaptureFixture[str], name: str) -> dict[str, str]:
    _, checks = report(project.control, capsys)
    return checks[name]


def configure_claude(project: Project, bin_dir: Path, **agent: object) -> None:
    claude = executable(bin_dir / "claude", "#!/bin/sh\necho '2.1.332 (Claude Code)'\n")
    project.configure(agent={"runner": "claude", "binary": str(claude), **agent})


# --- the box ------------------------------------------------------------------------------------------


def test_the_box_starts(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    found = check(project, capsys, "sandbox")
    assert found["level"] == "ok"
    assert found["detail"].startswith("sandbox: bubblewrap ") and found["detail"].endswith("starts a box")


def test_a_box_that_cannot_start_fails_with_the_fix_and_the_way_out(
    project: Project, capsys: pytest.CaptureFixture[str], bin_dir: Path
) -> None:
    # As on a host with unprivileged user namespaces turned off.
    executable(
        bin_dir / "bwrap",
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'bubblewrap 0.8.0'; exit 0; }\n"
        "echo 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n",
    )
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    found = checks["sandbox"]
    assert found["level"] == "fail"
    assert "cannot start a box here (bwrap: setting up uid map: Permission denied)" in found["detail"]
    assert "apt-get install bubblewrap" in found["fix"] and 'sandbox.mode = "none"' in found["fix"]


def test_a_missing_bwrap_fails_with_the_install_hint(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bin_dir: Path
) -> None:
    (bin_dir / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    monkeypatch.setenv("PATH", str(bin_dir))
    found = check(project, capsys, "sandbox")
    assert found["level"] == "fail"
    assert found["detail"].startswith("sandbox: bwrap is not installed; install bubblewrap")


def test_jobs_without_a_box_are_a_warning(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.configure(sandbox={"mode": "none"})
    found = check(project, capsys, "sandbox")
    assert found["level"] == "warning"
    assert found["detail"].startswith('sandbox: sandbox.mode = "none": every job runs unboxed')


# --- the gate's make target ------------------------------------------------------------------------------


def test_make_ci_without_a_makefile_on_the_base_fails(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.configure(ci={"command": ["make", "ci"]})
    found = check(project, capsys, "ci")
    assert found["level"] == "fail"
    assert "`make ci` needs GNUmakefile or makefile or Makefile, and origin/main has none" in found["detail"]
    # One in the working tree only is not what the gate checks out.
    (project.control / "Makefile").write_text("ci:\n\ttrue\n")
    assert check(project, capsys, "ci")["level"] == "fail"


def test_make_ci_without_a_ci_rule_fails_and_with_one_passes(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    (project.control / "Makefile").write_text("CC := cc\n.PHONY: lint ci\nlint:\n\truff check .\n")
    project.configure(ci={"command": ["make", "ci"]})
    found = check(project, capsys, "ci")
    assert found["level"] == "fail"
    assert "Makefile on origin/main has no rule for ci: every gate run fails" in found["detail"]
    assert found["fix"].startswith("add a `ci:` rule to Makefile")
    (project.control / "Makefile").write_text("lint:\n\truff check .\n\nci: lint\n\ttrue\n")
    project.commit_and_push("a ci target")
    found = check(project, capsys, "ci")
    assert found["level"] == "ok", found
    assert found["detail"].endswith("Makefile on origin/main has a rule for ci")


def test_a_makefile_that_includes_others_may_hold_the_rule(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    (project.control / "Makefile").write_text("include rules.mk\nlint:\n\ttrue\n")
    project.configure(ci={"command": ["make", "ci"]})
    found = check(project, capsys, "ci")
    assert found["level"] == "warning"
    assert "(it includes other makefiles)" in found["detail"]


@pytest.mark.parametrize(
    ("argv", "candidates", "goals"),
    [
        (["make", "ci"], ["GNUmakefile", "makefile", "Makefile"], ("ci",)),
        (
            ["make", "-C", "sub", "-j", "4", "ci", "V=1"],
            ["sub/GNUmakefile", "sub/makefile", "sub/Makefile"],
            ("ci",),
        ),
        (["/usr/bin/gmake", "-f", "build.mk", "-k", "test", "lint"], ["build.mk"], ("test", "lint")),
        (["make", "--directory=x", "--file=ci.mk", "-j"], ["x/ci.mk"], ()),
        (["make", "-Cdir", "-fother.mk", "--", "all"], ["dir/other.mk"], ("all",)),
    ],
)
def test_a_make_command_line_names_its_makefile_and_goals(
    argv: list[str], candidates: list[str], goals: tuple[str, ...]
) -> None:
    assert makefile.is_make(argv)
    invocation = makefile.parse(argv)
    assert (invocation.candidates(), invocation.goals) == (candidates, goals)


def test_a_makefile_s_rules() -> None:
    rules = makefile.read_rules(
        "# comment\nVAR := a:b\nX ::= y\nZ :::= w\n.PHONY: all ci\nall ci: deps\n\techo ci: not a rule\n"
        "%.o: %.c\n\tcc $<\n$(OUT): all\nstatic.a:: one\n"
    )
    assert rules.targets == {".PHONY", "all", "ci", "static.a"}
    assert rules.first == "all"
    assert rules.unsure == ["it has pattern rules", "it names targets with variables"]


# --- the agent: credentials and version ------------------------------------------------------------------


def test_a_preset_with_no_key_and_no_endpoint_fails(
    project: Project, capsys: pytest.CaptureFixture[str], bin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))]:
        monkeypatch.delenv(name)
    configure_claude(project, bin_dir)
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    found = checks["credentials"]
    assert found["level"] == "fail"
    assert found["detail"] == (
        "credentials: runner 'claude' has no key and no endpoint: no ANTHROPIC_*, CLAUDE_CODE_* variable is "
        "set, none of ~/.claude/.credentials.json, ~/.claude.json exists, and agent.base_url is empty"
    )
    # Each way the CLI can reach its model is enough, and named.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert (
        check(project, capsys, "credentials")["detail"]
        == "credentials: runner 'claude' gets $ANTHROPIC_API_KEY"
    )
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    login = Path(os.environ["HOME"]) / ".claude" / ".credentials.json"
    login.parent.mkdir()
    login.write_text("{}")
    assert check(project, capsys, "credentials")["detail"].endswith("gets ~/.claude/.credentials.json")
    login.unlink()
    configure_claude(project, bin_dir, env={"ANTHROPIC_AUTH_TOKEN": "${TOKEN}"})
    assert check(project, capsys, "credentials")["detail"].endswith("gets agent.env.ANTHROPIC_AUTH_TOKEN")


def test_an_endpoint_whose_key_variable_is_unset_fails(
    project: Project, capsys: pytest.CaptureFixture[str], bin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_claude(project, bin_dir, base_url="https://gateway.example", api_key_env="GATEWAY_KEY")
    monkeypatch.delenv("GATEWAY_KEY", raising=False)
    found = check(project, capsys, "credentials")
    assert found["level"] == "fail"
    assert "agent.api_key_env names $GATEWAY_KEY, which is not set" in found["detail"]
    monkeypatch.setenv("GATEWAY_KEY", "k")
    found = check(project, capsys, "credentials")
    assert found["level"] == "ok"
    assert found["detail"].startswith(
        "credentials: runner 'claude' gets endpoint https://gateway.example (agent.base_url), $GATEWAY_KEY"
    )


def test_each_installed_cli_s_version_against_the_one_tested(
    project: Project, capsys: pytest.CaptureFixture[str], bin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    executable(bin_dir / "codex", "#!/bin/sh\necho 'codex-cli 0.170.0'\n")
    configure_claude(project, bin_dir)
    found = check(project, capsys, "agent_versions")
    tested = TESTED_CLIS["codex"][2]
    assert found["level"] == "ok"  # codex differs, but claude is the runner, and it is the version tested
    assert found["detail"] == (
        f"agent_versions: claude 2.1.332 (the version tested); codex 0.170.0 (tested: {tested})"
    )
    project.configure(agent={"runner": "codex", "binary": ""})
    found = check(project, capsys, "agent_versions")
    assert found["level"] == "warning"
    assert found["fix"].startswith(f"install @openai/codex@{tested}, or read contrib/agents/FACTS.md")


def test_no_cli_installed_is_said(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    found = check(project, capsys, "agent_versions")
    assert found == {
        **found,
        "level": "ok",
        "detail": "agent_versions: none of claude, codex, gemini, opencode, aider is installed here",
    }


def test_the_tested_versions_are_written_once_and_agree_everywhere() -> None:
    """ralph.runners.TESTED_CLIS is where they are; .ci/install-agents installs them, FACTS.md says them."""
    pins = subprocess.run(
        ["bash", str(REPO / ".ci" / "install-agents"), "--pins"], capture_output=True, text=True, check=True
    ).stdout.split()
    expected = [
        f"{name}={package}@{version}" if registry == "npm" else f"{name}={package}=={version}"
        for name, (registry, package, version) in TESTED_CLIS.items()
    ]
    assert pins == expected
    facts = (REPO / "contrib" / "agents" / "FACTS.md").read_text()
    for registry, package, version in TESTED_CLIS.values():
        # Its versions table: | CLI | `package` (npm) | version | ...
        row = rf"^\| [^|]+ \| `{re.escape(package)}` \({registry}\) \| {re.escape(version)}[ |]"
        assert re.search(row, facts, re.M | re.I), f"FACTS.md does not say {package} {version}"


# --- what the Rust ralph left -----------------------------------------------------------------------------


def test_config_jsonc_in_force_is_said_and_its_unmapped_keys_listed(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    (project.control / ".ralph" / "config.toml").unlink()
    (project.control / ".ralph" / "config.jsonc").write_text(
        '{"version": 1, "agent": {"phases": 3}, "loop": {"x": 1}, // theirs\n}\n'
    )
    _, checks = report(project.control, capsys)
    assert (
        checks["config"]["detail"] == "config: no config.toml; the Rust ralph's .ralph/config.jsonc is read"
    )
    found = checks["rust_config"]
    assert found["level"] == "warning"
    assert found["detail"].endswith("mean nothing here and are ignored: agent.phases, loop")
    assert found["fix"].startswith("`ralph init --from-rust`")


def test_a_config_jsonc_beside_config_toml_is_not_read(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    (project.control / ".ralph" / "config.jsonc").write_text('{"version": 1}\n')
    found = check(project, capsys, "rust_config")
    assert found["level"] == "warning"
    assert found["detail"].startswith(
        "rust_config: .ralph/config.jsonc is not read: .ralph/config.toml exists"
    )


def test_a_gitignore_without_the_cache_fails(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    (project.control / ".gitignore").write_text(".ralph/workspaces/\n")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    found = checks["cache_ignored"]
    assert found["level"] == "fail"
    assert "the agent's environment" in found["detail"]
    assert found["fix"] == "add `.ralph/cache/` to .gitignore (`ralph init` does)"


def test_the_rust_ralph_s_lock(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    lock = project.control / ".ralph" / "lock"
    lock.mkdir()
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    (lock / "owner").write_text(f"pid: {os.getpid()}\nstarted_at: {started}\ncommand: ralph run loop\n")
    found = check(project, capsys, "rust_lock")
    assert found["level"] == "warning" and "ticks wait for it" in found["detail"]
    (lock / "owner").write_text("pid: 999999999\ncommand: ralph run loop\n")
    found = check(project, capsys, "rust_lock")
    assert found["level"] == "ok" and found["detail"].endswith("which is gone: stale, ignored")
    (lock / "owner").unlink()
    os.utime(lock, (0, 0))  # an owner-less lock older than a minute: nobody is taking it
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR and checks["rust_lock"]["level"] == "fail"


def test_a_checkout_not_set_up_fails(
    clone: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bare = clone("bare")
    code, checks = report(bare, capsys)
    assert code == ExitCode.ERROR
    assert checks["setup"]["level"] == "fail"
    assert checks["setup"]["fix"] == "run `ralph init` there, then commit and push what it creates"


def test_queue_files_where_the_config_puts_them(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    ralph_dir = project.control / ".ralph"
    (project.control / "tasks").mkdir()
    for name in ("queue", "done"):
        git(project.control, "mv", f".ralph/{name}.json", f"tasks/{name}.json")
    project.configure(queue={"file": "tasks/queue.json", "done_file": "tasks/done.json"})
    assert not (ralph_dir / "queue.json").exists()
    code, checks = report(project.control, capsys)
    assert checks["queue"]["level"] == "ok", checks["queue"]
    assert checks["queue"]["detail"].startswith(f"queue valid (tracked on origin/{BASE}")


def test_a_runner_s_pause_is_a_warning(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    state = new_state(target_branch=BASE, remote="origin", now=now)
    state.pause_runner("claude", now=now, reason="usage limit (5-hour)", reset_at=None)
    save_state(project.paths.state, state, now=now)
    found = check(project, capsys, "paused")
    assert found["level"] == "warning"
    assert found["detail"].startswith("claude paused until ")
    assert "(it lifts the runner's pause too)" in found["fix"]
