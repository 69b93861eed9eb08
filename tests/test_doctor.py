"""`ralph doctor`: each check, in a real repository set up to have the problem it looks for.

Real git (a bare origin and a control clone), real files, real processes, the real /proc. HOME is a
temporary directory (conftest's hermetic_seal), so user units and home-directory PATH entries are the
test's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE, git
from harness import SCRIPTED_AGENT, Project, make_project
from helpers import executable, ralph

from ralph import proc
from ralph.commands.doctor import (
    CRON_PATH,
    MIN_GIT,
    MIN_GIT_WHY,
    doctor,
)
from ralph.errors import ExitCode
from ralph.git import parse_git_version
from ralph.lock import TickLock
from ralph.state import Job, JobKind, Lifecycle, Worker, new_state, save_state

Report = dict[str, dict[str, Any]]


@pytest.fixture
def project(origin: Path, control: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A healthy project: the agent and CI are named by absolute paths, and PATH is what cron gives
    (plus wherever git is), so nothing depends on this machine's PATH."""
    git_dir = os.path.dirname(shutil.which("git") or "/usr/bin/git")
    monkeypatch.setenv("PATH", ":".join(dict.fromkeys([git_dir, *CRON_PATH.split(":")])))
    return make_project(
        origin, control, agent={"command": [sys.executable, str(SCRIPTED_AGENT), "{prompt_file}"]}
    )


def report(
    start: Path, capsys: pytest.CaptureFixture[str], *, cron: bool = False, allow_root: bool = True
) -> tuple[ExitCode, Report]:
    """Run doctor with --json; return its exit code and its checks by name."""
    code = doctor(start=start, as_json=True, cron=cron, allow_root=allow_root)
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is (code == ExitCode.OK)
    return code, {c["name"]: c for c in doc["checks"]}


def not_ok(checks: Report) -> dict[str, str]:
    return {name: c["level"] for name, c in checks.items() if c["level"] != "ok"}


def write_config(project: Project, text: str) -> None:
    (project.control / ".ralph" / "config.toml").write_text(text)


def job_for(project: Project, task_id: str, identity: proc.Identity, *, kind: JobKind = JobKind.AGENT) -> Job:
    run_dir = project.paths.run_dir(task_id)
    started = datetime.now(UTC).replace(microsecond=0)
    return Job(
        kind=kind,
        pid=identity.pid,
        pid_start_ticks=identity.start_ticks,
        boot_id=identity.boot_id,
        started_at=started,
        deadline=started + timedelta(minutes=30),
        log_path=str(run_dir / f"{kind}.log"),
        result_path=str(run_dir / f"{kind}.result.json"),
    )


def worker(
    project: Project,
    task_id: str,
    lifecycle: Lifecycle,
    *,
    job: Job | None = None,
    make_workspace: bool = True,
) -> Worker:
    now = datetime.now(UTC).replace(microsecond=0)
    path = project.paths.workspace(task_id)
    if make_workspace:
        path.mkdir(parents=True, exist_ok=True)
    terminal = lifecycle in Lifecycle.terminal()
    return Worker(
        task_id=task_id,
        lifecycle=lifecycle,
        workspace_path=str(path),
        started_at=now,
        updated_at=now,
        completed_at=now if terminal else None,
        job=job,
    )


def save_workers(project: Project, *workers: Worker) -> None:
    now = datetime.now(UTC)
    state = new_state(target_branch=BASE, remote="origin", now=now)
    state.workers = list(workers)
    save_state(project.paths.state, state, now=now)


@pytest.fixture
def dead_identity() -> proc.Identity:
    """The identity of a process that has exited and been reaped: a job nobody runs any more."""
    child = subprocess.Popen(["sleep", "30"])
    identity = proc.identify(child.pid)
    assert identity is not None
    child.kill()
    child.wait()
    assert not proc.is_alive(identity)
    return identity


@pytest.fixture
def live_identity() -> Iterator[proc.Identity]:
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    identity = proc.identify(child.pid)
    assert identity is not None
    yield identity
    child.kill()
    child.wait()


def snapshot(*roots: Path) -> dict[str, bytes | None]:
    """Every file and directory under `roots`, with its bytes (None for a directory or a link)."""
    files: dict[str, bytes | None] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames:
                files[os.path.join(dirpath, name)] = None
            for name in filenames:
                path = os.path.join(dirpath, name)
                files[path] = None if os.path.islink(path) else Path(path).read_bytes()
    return files


# --- the whole report ----------------------------------------------------------------------------------


def test_a_healthy_project_passes_every_check(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code = doctor(start=project.control, as_json=False, cron=False, allow_root=True)
    out = capsys.readouterr().out.splitlines()
    assert code == ExitCode.OK, "\n".join(out)
    *lines, last = out
    assert all(line.startswith("ok    ") for line in lines), "\n".join(out)
    assert last == f"doctor: all {len(lines)} checks ok"
    version = parse_git_version(git(project.control, "--version"))
    assert version is not None
    minimum = ".".join(map(str, MIN_GIT))
    assert lines[0].startswith(f"ok    git {'.'.join(map(str, version))} (>= {minimum})")
    # Every check that needs a checkout ran.
    _, checks = report(project.control, capsys)
    assert set(checks) == {
        "git", "user", "repository", "ticks", "config", "setup", "rust_config", "identity", "origin",
        "claims", "queue", "state", "lock", "rust_lock", "workspace_root", "cache_ignored", "sandbox",
        "agent", "credentials", "agent_versions", "ci", "systemd", "jobs", "workspaces", "paused",
    }  # fmt: skip
    assert "main is at" in checks["origin"]["detail"]
    assert checks["queue"]["detail"].startswith("queue valid (tracked on origin/main, as last fetched: ")
    assert checks["systemd"]["detail"].endswith("no unit found for this checkout (cron, or none installed)")


def test_a_healthy_project_passes_under_cron(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("git", path=CRON_PATH) is None:
        pytest.skip(f"git is not in {CRON_PATH} on this machine")
    code, checks = report(project.control, capsys, cron=True)
    assert code == ExitCode.OK, checks
    assert not_ok(checks) == {}


def test_json_document_shape(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    (project.paths.workspace_root / "RQ-0099").mkdir(parents=True)  # one warning, to see its shape
    code = doctor(start=project.control, as_json=True, cron=False, allow_root=True)
    doc = json.loads(capsys.readouterr().out)
    assert code == ExitCode.OK
    assert list(doc) == ["schema", "ok", "checks"]
    assert doc["schema"] == 1 and doc["ok"] is True
    names = [c["name"] for c in doc["checks"]]
    assert len(names) == len(set(names))
    for check in doc["checks"]:
        assert list(check) == ["name", "ok", "level", "detail", "fix"]
        assert check["level"] in ("ok", "warning", "fail")
        assert check["ok"] is (check["level"] != "fail")
        assert isinstance(check["detail"], str) and check["detail"]
        assert (check["fix"] is None) is (check["level"] == "ok"), check
    assert [c["level"] for c in doc["checks"] if c["name"] == "workspaces"] == ["warning"]


def test_doctor_changes_nothing(
    project: Project, capsys: pytest.CaptureFixture[str], dead_identity: proc.Identity
) -> None:
    """A run over a checkout with every kind of trouble writes, moves and locks nothing."""
    save_workers(
        project, worker(project, "RQ-0001", Lifecycle.RUNNING, job=job_for(project, "RQ-0001", dead_identity))
    )
    (project.paths.workspace_root / "RQ-0042").mkdir(parents=True)
    project.paths.lock.write_text("pid 1 since 2020-01-01T00:00:00Z\n")
    (project.control / ".ralph" / "config.toml").write_text("[agent]\nrunner = 'claude'\n")
    before = snapshot(project.control, project.origin)
    doctor(start=project.control, as_json=False, cron=True, allow_root=False)
    doctor(start=project.control, as_json=True, cron=False, allow_root=True)
    # The claims check pushes refs/ralph/doctor/<host> and deletes it: git leaves the first directory
    # under refs/ on the bare origin, empty. Nothing else, and no ref, remains.
    probed = str(project.origin / "refs" / "ralph")
    assert not os.listdir(probed)
    assert snapshot(project.control, project.origin) == {**before, probed: None}
    before = {**before, probed: None}
    # A damaged state file is what a tick copies aside; doctor leaves it, and makes no copy.
    project.paths.state.write_bytes(b"{")
    before = snapshot(project.control, project.origin)
    doctor(start=project.control, as_json=False, cron=False, allow_root=True)
    capsys.readouterr()
    assert snapshot(project.control, project.origin) == before


def test_not_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = report(tmp_path, capsys)
    assert code == ExitCode.ERROR
    assert list(checks) == ["git", "user", "repository"]
    assert checks["repository"]["level"] == "fail"
    assert "not inside a git repository" in checks["repository"]["detail"]
    assert "-C <checkout>" in checks["repository"]["fix"]


# --- through the command line ------------------------------------------------------------------------


def test_ralph_doctor_exits_0_when_healthy_and_1_when_a_check_fails(project: Project) -> None:
    healthy = ralph(project.control, "doctor", "--allow-root")
    assert healthy.exit_code == 0, healthy.output
    *lines, last = healthy.stdout.splitlines()
    assert all(line.startswith("ok    ") for line in lines), healthy.stdout
    assert last == f"doctor: all {len(lines)} checks ok"
    git(project.control, "remote", "remove", "origin")
    broken = ralph(project.control, "doctor", "--allow-root")
    assert broken.exit_code == 1
    assert "FAIL  no remote 'origin'" in broken.stdout
    assert broken.stdout.splitlines()[-1].endswith("fix the FAIL lines first")


def test_ralph_doctor_json(project: Project) -> None:
    healthy = ralph(project.control, "doctor", "--allow-root", "--json")
    assert healthy.exit_code == 0, healthy.output
    assert healthy.stderr == ""
    doc = json.loads(healthy.stdout)
    assert list(doc) == ["schema", "ok", "checks"]
    assert (doc["schema"], doc["ok"]) == (1, True)
    assert {"git", "repository", "origin", "queue", "agent", "ci"} <= {c["name"] for c in doc["checks"]}
    assert {c["level"] for c in doc["checks"]} == {"ok"}
    git(project.control, "remote", "remove", "origin")
    broken = ralph(project.control, "doctor", "--allow-root", "--json")
    assert broken.exit_code == 1
    doc = json.loads(broken.stdout)
    assert doc["ok"] is False
    origin = next(c for c in doc["checks"] if c["name"] == "origin")
    assert (origin["ok"], origin["level"]) == (False, "fail")
    assert origin["detail"].startswith("no remote 'origin'") and origin["fix"]


def test_ralph_doctor_cron_resolves_commands_with_crons_path(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("git", path=CRON_PATH) is None:
        pytest.skip(f"git is not in {CRON_PATH} on this machine")
    bin_dir = tmp_path / "opt" / "agent" / "bin"
    executable(bin_dir / "my-agent")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    configure_agent(project, "my-agent")
    assert ralph(project.control, "doctor", "--allow-root").exit_code == 0
    cron = ralph(project.control, "doctor", "--allow-root", "--cron", "--json")
    assert cron.exit_code == 1
    failed = {c["name"]: c["detail"] for c in json.loads(cron.stdout)["checks"] if c["level"] == "fail"}
    assert list(failed) == ["agent"]
    assert f"not on cron's PATH ({CRON_PATH})" in failed["agent"]


def test_ralph_doctor_allow_root(project: Project) -> None:
    plain = ralph(project.control, "doctor", "--json")
    user = next(c for c in json.loads(plain.stdout)["checks"] if c["name"] == "user")
    if os.geteuid() == 0:
        assert plain.exit_code == 1 and user["level"] == "fail"
        allowed = ralph(project.control, "doctor", "--allow-root")
        assert allowed.exit_code == 0, allowed.output
        assert "ok    running as root, allowed by --allow-root" in allowed.stdout
    else:
        assert plain.exit_code == 0 and user["level"] == "ok"


# --- git and the user ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("git version 2.39.5", (2, 39, 5)),
        ("git version 2.39.3 (Apple Git-145)", (2, 39, 3)),
        ("git version 2.45.1.windows.1", (2, 45, 1)),
        ("git version 2.31", (2, 31, 0)),
        ("not git", None),
    ],
)
def test_parse_git_version(text: str, version: tuple[int, int, int] | None) -> None:
    assert parse_git_version(text) == version


def test_the_minimum_git_runs_what_ralph_runs(repo: Path) -> None:
    """The feature MIN_GIT_WHY names, as ralph uses it, works on the git this suite runs with."""
    assert "rev-parse --path-format=absolute" in MIN_GIT_WHY
    out = git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")
    assert out == str(repo / ".git")


@pytest.mark.parametrize(("version", "level"), [("2.30.0", "fail"), ("2.31.0", "ok"), ("2.45.1", "ok")])
def test_the_git_version_is_checked(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, level: str
) -> None:
    """A git that reports an older version fails the git check; everything else is the real git."""
    real = shutil.which("git")
    assert real is not None
    fake = executable(
        tmp_path / "fake-git" / "git",
        f'#!/bin/sh\n[ "$1" = --version ] && exec echo "git version {version}"\nexec {real} "$@"\n',
    )
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    result = ralph(project.control, "doctor", "--allow-root", "--json")
    doc = json.loads(result.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert not_ok(checks) == ({"git": "fail"} if level == "fail" else {})
    assert result.exit_code == (1 if level == "fail" else 0)
    minimum = ".".join(map(str, MIN_GIT))
    if level == "fail":
        assert checks["git"]["detail"] == f"git {version} is older than {minimum}: {MIN_GIT_WHY}"
        assert checks["git"]["fix"].startswith(f"install git {minimum} or newer")
    else:
        assert checks["git"]["detail"] == f"git {version} (>= {minimum}) at {fake}"


def test_running_as_root(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        _, checks = report(project.control, capsys, allow_root=False)
        assert checks["user"]["level"] == "ok" and "not root" in checks["user"]["detail"]
        pytest.skip("the refusal can only be seen as root")
    code, checks = report(project.control, capsys, allow_root=False)
    assert code == ExitCode.ERROR
    assert checks["user"]["level"] == "fail"
    assert "agent and CI job would run as root" in checks["user"]["detail"]
    assert "dedicated unprivileged user" in checks["user"]["fix"]
    code, checks = report(project.control, capsys, allow_root=True)
    assert code == ExitCode.OK and checks["user"]["detail"] == "running as root, allowed by --allow-root"


def test_no_committer_identity(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (Path(os.environ["HOME"]) / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    for name in ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    code, checks = report(project.control, capsys)
    if checks["identity"]["level"] == "ok":
        pytest.skip("git guessed an identity from this host's name; it has a domain")
    assert code == ExitCode.ERROR
    assert checks["identity"]["level"] == "fail"
    assert checks["identity"]["detail"].startswith("identity missing: git has no author identity")
    assert f"git -C {project.control} config user.email" in checks["identity"]["fix"]


def test_an_author_identity_is_needed_as_well_as_a_committer(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ralph's commits need both, as the tick's preflight checks (ralph.tick.check_identity)."""
    # useConfigOnly: git never guesses an author from the host's name (it would with a domain in it).
    (Path(os.environ["HOME"]) / ".gitconfig").write_text(
        "[init]\n\tdefaultBranch = main\n[user]\n\tuseConfigOnly = true\n"
    )
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert "no author identity" in checks["identity"]["detail"]


def test_identity_only_from_this_shells_environment(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIT_COMMITTER_* are set here (conftest) but the git config has no user: cron would have none."""
    (Path(os.environ["HOME"]) / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK
    assert checks["identity"]["level"] == "warning"
    assert "$GIT_COMMITTER_NAME" in checks["identity"]["detail"]
    code, checks = report(project.control, capsys, cron=True)
    assert code == ExitCode.ERROR and checks["identity"]["level"] == "fail"


# --- origin and the queue ------------------------------------------------------------------------------


def test_no_origin(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    git(project.control, "remote", "remove", "origin")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert checks["origin"]["level"] == "fail"
    assert checks["origin"]["detail"] == f"no remote 'origin' in {project.control}"
    assert "remote add origin <url>" in checks["origin"]["fix"]
    # Removing the remote removed origin/main too: the queue can only be read from the working tree.
    assert checks["queue"]["level"] == "warning"
    assert "origin/main was never fetched here" in checks["queue"]["detail"]
    assert checks["queue"]["fix"] == f"`git -C {project.control} fetch origin`, then run doctor again"


def test_origin_unreachable(project: Project, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    gone = tmp_path / "moved-away.git"
    git(project.control, "remote", "set-url", "origin", str(gone))
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    origin = checks["origin"]
    assert origin["level"] == "fail"
    assert origin["detail"].startswith(f"origin unreachable ({gone}): fatal: ")
    assert "does not appear to be a git repository" in origin["detail"]
    assert "authenticate" in origin["fix"]
    # The queue is still read, from origin/main as last fetched.
    assert checks["queue"]["level"] == "ok"


def test_claims_fail_in_multi_mode_when_the_remote_refuses_refs_ralph(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    refuse = project.origin / "hooks" / "update"
    refuse.write_text(
        '#!/bin/sh\ncase "$1" in refs/ralph/*) echo "refs/ralph is protected" >&2; exit 1;; esac\n'
    )
    refuse.chmod(0o755)
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    claims = checks["claims"]
    assert claims["level"] == "fail"
    assert claims["detail"].startswith("claims: origin refused an atomic push to refs/ralph/doctor/")
    assert "refs/ralph is protected" in claims["detail"]
    assert claims["detail"].endswith("with hosts.mode = multi no task can be claimed, so none starts")
    assert claims["fix"].startswith(
        "let the user ralph pushes as create, update and delete refs under refs/ralph/"
    )
    assert "GitHub" in claims["fix"] and "GitLab" in claims["fix"]
    assert claims["fix"].endswith('or, with one host only, set hosts.mode = "single" in .ralph/config.toml')
    # A single host only loses the shared facts: a warning.
    project.configure(hosts={"mode": "single"})
    code, checks = report(project.control, capsys)
    assert checks["claims"]["level"] == "warning" and code == ExitCode.OK
    assert checks["claims"]["detail"].endswith(
        "attempts, cancellations and blocks stay on this host (hosts.mode = single)"
    )


def test_claims_ok_says_the_mode(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    _, checks = report(project.control, capsys)
    assert checks["claims"] == {
        "name": "claims",
        "ok": True,
        "level": "ok",
        "detail": "claims: origin takes atomic, leased pushes to refs/ralph/ (hosts.mode = multi)",
        "fix": None,
    }
    assert git(project.origin, "for-each-ref", "refs/ralph/") == ""


def test_a_password_in_the_url_is_not_shown(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    git(project.control, "remote", "set-url", "origin", "https://ralph:s3cret-token@127.0.0.1:9/app.git")
    _, checks = report(project.control, capsys)
    assert checks["origin"]["level"] == "fail"
    assert "s3cret-token" not in json.dumps(checks)
    assert "https://ralph:***@127.0.0.1:9/app.git" in checks["origin"]["detail"]


def test_base_branch_missing_on_origin(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(
        project,
        f'[git]\nbase_branch = "develop"\n[agent]\nrunner = "command"\ncommand = ["{sys.executable}"]\n'
        "timeout_minutes = 2\n[ci]\ncommand = []\n",
    )
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert checks["origin"]["level"] == "fail"
    assert f"origin ({project.origin}) has no branch 'develop'" == checks["origin"]["detail"]
    assert "git push origin HEAD:develop" in checks["origin"]["fix"]


def test_broken_queue_on_origin(
    project: Project, capsys: pytest.CaptureFixture[str], clone: Callable[[str], Path]
) -> None:
    """The queue is read from origin/main as last fetched, not from the working tree (which is fine)."""
    other = clone("other")
    (other / ".ralph" / "queue.json").write_text('{"version": 1, "tasks": [')
    git(other, "commit", "-q", "-am", "break the queue")
    git(other, "push", "-q", "origin", f"HEAD:{BASE}")
    _, checks = report(project.control, capsys)
    assert checks["queue"]["level"] == "ok", "not fetched yet: doctor does not fetch"
    git(project.control, "fetch", "-q", "origin")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    queue = checks["queue"]
    assert queue["level"] == "fail"
    assert queue["detail"].startswith("queue unreadable on origin/main (as last fetched, ")
    assert ".ralph/queue.json" in queue["detail"]
    assert "ralph queue validate" in queue["fix"]


def test_an_invalid_task_on_origin(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    queue = project.control / ".ralph" / "queue.json"
    doc = json.loads(queue.read_text())
    doc["tasks"].append(
        {
            "id": "RQ-0001",
            "title": "depends on nothing that exists",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "depends_on": ["RQ-0404"],
        }
    )
    queue.write_text(json.dumps(doc))
    project.commit_and_push("a task with a dangling dependency")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert checks["queue"]["level"] == "fail"
    assert "RQ-0404" in checks["queue"]["detail"]


def test_queue_tracked_but_done_ignored(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    git(project.control, "rm", "-q", "--cached", ".ralph/done.json")
    with open(project.control / ".gitignore", "a") as f:
        f.write(".ralph/done.json\n")
    project.commit_and_push("stop tracking done.json")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert checks["queue"]["level"] == "fail"
    assert "needs both tracked" in checks["queue"]["detail"]


def test_an_untracked_queue(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    git(project.control, "rm", "-q", "--cached", ".ralph/done.json", ".ralph/queue.json")
    with open(project.control / ".gitignore", "a") as f:
        f.write(".ralph/queue.json\n.ralph/done.json\n")
    project.commit_and_push("keep the queue on this host")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK, checks
    assert checks["queue"]["detail"] == (
        "queue valid (untracked: both files gitignored, read from the working tree): "
        "0 in the queue, 0 in the done archive"
    )


# --- config and state ----------------------------------------------------------------------------------


def test_config_with_an_unknown_key(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(project, '[agent]\nrunner = "claude"\nmodle = "opus"\n')
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert checks["config"]["level"] == "fail"
    assert "modle" in checks["config"]["detail"]
    assert "config.toml" in checks["config"]["fix"]
    # What does not depend on the config is still checked; what does is said to be unchecked.
    for name in ("git", "identity", "state", "lock", "systemd", "jobs"):
        assert checks[name]["level"] == "ok", checks[name]
    for name in ("origin", "queue", "workspace_root", "agent", "ci", "workspaces"):
        assert checks[name]["level"] == "warning"
        assert checks[name]["detail"].startswith(f"{name}: not checked: config.toml is invalid")


def test_config_that_is_not_toml(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(project, "[agent\n")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert "not valid TOML" in checks["config"]["detail"]


def test_corrupt_state_is_reported_and_not_quarantined(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    state = project.paths.state
    state.parent.mkdir(parents=True)
    state.write_bytes(b'{"schema_version": 5, "workers": [')
    before = sorted(p.name for p in state.parent.iterdir())
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert checks["state"]["level"] == "fail"
    assert checks["state"]["detail"].startswith("state.json invalid: not valid JSON")
    assert "ralph doctor" not in checks["state"]["detail"]
    assert "move it aside" in checks["state"]["fix"]
    assert sorted(p.name for p in state.parent.iterdir()) == before  # no state.json.corrupt-* copy
    assert state.read_bytes() == b'{"schema_version": 5, "workers": ['
    assert checks["jobs"]["detail"].startswith("jobs: not checked: state.json is unreadable")


def test_state_from_a_newer_ralph(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    state = project.paths.state
    state.parent.mkdir(parents=True)
    state.write_text('{"schema_version": 99}')
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert "newer ralph" in checks["state"]["detail"]
    assert checks["state"]["fix"] == "upgrade ralph to the version that wrote it"


def test_quarantined_copies_are_a_warning(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    save_workers(project)
    copy = project.paths.state.with_name("state.json.corrupt-20260101T000000Z")
    copy.write_text("{")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK
    assert checks["state"]["level"] == "warning"
    assert copy.name in checks["state"]["detail"]
    assert f"rm {project.paths.state}.corrupt-*" in checks["state"]["fix"]
    assert copy.exists()


# --- the workspace root, the lock ----------------------------------------------------------------------


def test_workspace_root_not_ignored(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    (project.control / ".gitignore").write_text(".ralph/cache/\n")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    check = checks["workspace_root"]
    assert check["level"] == "fail"
    assert "inside the repository but not gitignored" in check["detail"]
    assert "add `.ralph/workspaces/` to .gitignore" in check["fix"]


def test_lock_on_a_local_disk(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    _, checks = report(project.control, capsys)
    assert checks["lock"]["level"] == "ok"
    assert checks["lock"]["detail"].startswith(
        "lock .ralph/cache/parallel/state.json.lock on a local filesystem"
    )
    assert checks["lock"]["detail"].endswith("; not held")


def test_lock_held_by_a_running_tick(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    with TickLock(project.paths.lock, now=datetime.now(UTC)):
        code, checks = report(project.control, capsys)
    assert code == ExitCode.OK
    assert checks["lock"]["level"] == "ok"
    assert checks["lock"]["detail"].endswith(
        f"held by pid {os.getpid()} (a tick or another ralph command is at work)"
    )


def test_lock_held_for_too_long(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    with TickLock(project.paths.lock, now=datetime.now(UTC) - timedelta(hours=2)):
        code, checks = report(project.control, capsys)
    assert code == ExitCode.OK
    lock = checks["lock"]
    assert lock["level"] == "warning"
    assert f"held by pid {os.getpid()} since" in lock["detail"] and "(2h00m)" in lock["detail"]
    assert f"kill {os.getpid()}" in lock["fix"]
    # A leftover lock file from a finished tick is normal.
    _, checks = report(project.control, capsys)
    assert checks["lock"]["level"] == "ok" and checks["lock"]["detail"].endswith("not held")


# --- the agent and CI on the PATH cron and systemd give ------------------------------------------------


def configure_agent(project: Project, command: str) -> None:
    write_config(
        project,
        f'[agent]\nrunner = "command"\ncommand = ["{command}", "{{prompt_file}}"]\n[ci]\ncommand = []\n',
    )


def test_agent_binary_missing(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    configure_agent(project, "no-such-agent-anywhere")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    agent = checks["agent"]
    assert agent["level"] == "fail"
    assert agent["detail"].startswith(
        "agent (runner 'command') 'no-such-agent-anywhere' is not an executable on PATH"
    )
    assert agent["fix"] == "install it, or set agent.binary to its absolute path"


def test_agent_found_only_off_crons_path(
    project: Project, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "opt" / "agent" / "bin"
    agent = executable(bin_dir / "my-agent")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    configure_agent(project, "my-agent")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK and checks["agent"]["level"] == "ok"
    assert checks["agent"]["detail"] == f"agent (runner 'command') {agent}"
    code, checks = report(project.control, capsys, cron=True)
    assert code == ExitCode.ERROR
    check = checks["agent"]
    assert check["level"] == "fail"
    assert f"not on cron's PATH ({CRON_PATH}); yours finds it in {bin_dir}" in check["detail"]
    assert f"PATH={bin_dir}:{CRON_PATH}" in check["fix"]
    assert f"set agent.binary to {agent}" in check["fix"]


def test_agent_found_only_under_home_warns(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home_bin = Path(os.environ["HOME"]) / ".local" / "bin"
    agent = executable(home_bin / "my-agent")
    monkeypatch.setenv("PATH", f"{home_bin}:{os.environ['PATH']}")
    configure_agent(project, "my-agent")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK
    check = checks["agent"]
    assert check["level"] == "warning"
    assert f"found through {home_bin} on your PATH, under your home directory" in check["detail"]
    assert f"PATH={home_bin}:{CRON_PATH}" in check["fix"] and f"set agent.binary to {agent}" in check["fix"]


def test_agent_found_in_a_virtualenv_warns(
    project: Project, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = tmp_path / "venv"
    executable(venv / "bin" / "my-agent")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    monkeypatch.setenv("PATH", f"{venv / 'bin'}:{os.environ['PATH']}")
    configure_agent(project, "my-agent")
    _, checks = report(project.control, capsys)
    assert checks["agent"]["level"] == "warning"
    assert f"inside the virtualenv {venv}" in checks["agent"]["detail"]


def test_agents_interpreter_off_crons_path(
    project: Project, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An npm-style agent (`#!/usr/bin/env node`) named by its absolute path still needs node on PATH."""
    node_dir = tmp_path / "node" / "bin"
    executable(node_dir / "fake-node")
    agent = executable(tmp_path / "agent" / "my-agent", "#!/usr/bin/env fake-node\n")
    monkeypatch.setenv("PATH", f"{node_dir}:{os.environ['PATH']}")
    configure_agent(project, str(agent))
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK and checks["agent"]["level"] == "ok"
    code, checks = report(project.control, capsys, cron=True)
    assert code == ExitCode.ERROR
    check = checks["agent"]
    assert check["level"] == "fail"
    assert check["detail"].startswith(f"agent (runner 'command') {agent}; its interpreter (fake-node")
    assert f"yours finds it in {node_dir}" in check["detail"]
    assert f"PATH={node_dir}:{CRON_PATH}" in check["fix"]


def test_ci_command_missing(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(
        project,
        f'[agent]\nrunner = "command"\ncommand = ["{sys.executable}"]\n[ci]\ncommand = ["./scripts/ci"]\n',
    )
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert checks["ci"]["level"] == "fail"
    assert checks["ci"]["detail"] == f"CI command './scripts/ci' is not an executable in {project.control}"
    executable(project.control / "scripts" / "ci")
    code, checks = report(project.control, capsys)
    assert checks["ci"]["level"] == "ok", checks["ci"]


# --- systemd -------------------------------------------------------------------------------------------


def user_unit(name: str, text: str) -> Path:
    path = Path(os.environ["HOME"]) / ".config" / "systemd" / "user" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def unit_text(service: str) -> str:
    return f"[Unit]\nDescription=ralph tick\n\n[Service]\nType=oneshot\n{service}\n"


def test_systemd_unit_with_the_default_kill_mode_fails(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    unit = user_unit(
        "ralph.service",
        unit_text(
            f"WorkingDirectory={project.control}\nExecStart=/usr/local/bin/ralph run\nKillMode=control-group"
        ),
    )
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    check = checks["systemd"]
    assert check["level"] == "fail"
    assert f"systemd unit {unit} runs ralph here with KillMode=control-group" in check["detail"]
    assert "every agent and CI job dies with the tick" in check["detail"]
    assert (
        check["fix"]
        == f"add `KillMode=process` under [Service] in {unit}, then `systemctl --user daemon-reload`"
    )
    unit.write_text(unit_text(f"WorkingDirectory={project.control}\nExecStart=/usr/local/bin/ralph run"))
    _, checks = report(project.control, capsys)
    assert "KillMode=control-group (the default)" in checks["systemd"]["detail"]


def test_systemd_unit_with_kill_mode_process_passes(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    unit = user_unit(
        "ralph.service",
        unit_text(
            f"WorkingDirectory={project.control}\nExecStart=/usr/local/bin/ralph run\nKillMode=process"
        ),
    )
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK
    assert checks["systemd"] == {
        "name": "systemd",
        "ok": True,
        "level": "ok",
        "detail": f"systemd unit {unit} has KillMode=process",
        "fix": None,
    }


def test_systemd_drop_in_overrides_the_unit(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    user_unit(
        "ralph.service", unit_text(f"ExecStart=/usr/bin/ralph -C {project.control} run\nKillMode=process")
    )
    user_unit("ralph.service.d/override.conf", "[Service]\nKillMode=mixed\n")
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert "KillMode=mixed" in checks["systemd"]["detail"]


def test_systemd_template_unit_for_this_checkout(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    user_unit("ralph@.service", unit_text("WorkingDirectory=%f\nExecStart=/usr/bin/ralph run"))
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert "ralph@.service runs ralph here" in checks["systemd"]["detail"]


def test_systemd_unit_for_another_checkout_is_not_this_ones(
    project: Project, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    user_unit(
        "ralph-other.service", unit_text(f"WorkingDirectory={tmp_path / 'elsewhere'}\nKillMode=control-group")
    )
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK
    assert checks["systemd"]["detail"].endswith("no unit found for this checkout (cron, or none installed)")


def test_the_shipped_user_units(origin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """systemd/user/ as shipped: ralph.service runs in %h/src/app, ralph@.service in %f."""
    shipped = Path(__file__).resolve().parent.parent / "systemd" / "user"
    if not (shipped / "ralph.service").is_file() or not (shipped / "ralph@.service").is_file():
        pytest.skip("no systemd/user units in this tree")
    checkout = Path(os.environ["HOME"]) / "src" / "app"
    git(origin.parent, "clone", "-q", str(origin), str(checkout))
    make_project(origin, checkout, agent={"command": [sys.executable, str(SCRIPTED_AGENT), "{prompt_file}"]})
    units = [user_unit(name, (shipped / name).read_text()) for name in ("ralph.service", "ralph@.service")]
    _, checks = report(checkout, capsys)
    assert checks["systemd"]["level"] == "ok"
    assert checks["systemd"]["detail"] == "; ".join(f"systemd unit {u} has KillMode=process" for u in units)
    template = units[1]
    template.write_text(template.read_text().replace("KillMode=process", ""))
    code, checks = report(checkout, capsys)
    assert code == ExitCode.ERROR
    assert (
        f"systemd unit {template} runs ralph here with KillMode=control-group" in checks["systemd"]["detail"]
    )


# --- jobs and workspaces -------------------------------------------------------------------------------


def test_a_recorded_job_that_is_dead(
    project: Project, capsys: pytest.CaptureFixture[str], dead_identity: proc.Identity
) -> None:
    save_workers(
        project, worker(project, "RQ-0001", Lifecycle.RUNNING, job=job_for(project, "RQ-0001", dead_identity))
    )
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK
    jobs = checks["jobs"]
    assert jobs["level"] == "warning"
    assert (
        f"RQ-0001 (running): its agent job (pid {dead_identity.pid}) is gone and left no result"
        in jobs["detail"]
    )
    assert "the next tick will mark it lost" in jobs["detail"]
    assert not_ok(checks) == {"jobs": "warning"}


def test_a_dead_job_with_a_result_is_finished(
    project: Project, capsys: pytest.CaptureFixture[str], dead_identity: proc.Identity
) -> None:
    job = job_for(project, "RQ-0001", dead_identity, kind=JobKind.CI)
    Path(job.result_path).parent.mkdir(parents=True)
    Path(job.result_path).write_text(
        json.dumps(
            {"exit_code": 0, "signal": None, "timed_out": False, "started_at": "x", "finished_at": "y"}
        )
    )
    save_workers(project, worker(project, "RQ-0001", Lifecycle.CHECKING, job=job))
    _, checks = report(project.control, capsys)
    assert checks["jobs"]["level"] == "ok"
    assert "RQ-0001 ci finished" in checks["jobs"]["detail"]


def test_a_live_job(
    project: Project, capsys: pytest.CaptureFixture[str], live_identity: proc.Identity
) -> None:
    save_workers(
        project, worker(project, "RQ-0001", Lifecycle.RUNNING, job=job_for(project, "RQ-0001", live_identity))
    )
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK, checks
    assert (
        checks["jobs"]["detail"]
        == f"jobs: 1 recorded, all accounted for (RQ-0001 agent pid {live_identity.pid})"
    )


def test_an_orphan_workspace(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    save_workers(project, worker(project, "RQ-0001", Lifecycle.FAILED))
    orphan = project.paths.workspace_root / "RQ-0007"
    orphan.mkdir(parents=True)
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK
    check = checks["workspaces"]
    assert check["level"] == "warning"
    assert (
        check["detail"]
        == "workspaces: 1 workspace in .ralph/workspaces with no worker record (orphans): RQ-0007"
    )
    assert check["fix"].startswith(
        "`ralph discard RQ-0007` saves any commits of its own to refs/ralph/attic/"
    )
    assert orphan.is_dir()  # doctor only looks


def test_discard_removes_an_orphan_workspace_and_keeps_its_commits(project: Project) -> None:
    """The fix doctor gives for an orphan works: the commits are saved, the directory is gone."""
    task = project.add("Orphaned")
    project.tick()
    project.wait_for_jobs()
    ws = project.paths.workspace(task)
    head = git(ws, "rev-parse", "HEAD")
    project.paths.state.unlink()  # the record is gone (state moved aside by hand, say); the clone stays
    result = ralph(project.control, "discard", task)
    assert result.exit_code == 0, result.output
    assert not ws.exists()
    assert git(project.control, "rev-parse", f"refs/ralph/attic/{task}-1") == head


def test_a_pause_is_a_warning(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert ralph(project.control, "pause", "--reason", "release day").exit_code == 0
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK
    assert checks["paused"]["level"] == "warning"
    assert "release day" in checks["paused"]["detail"] and checks["paused"]["fix"].startswith(
        "`ralph resume`"
    )


def test_records_whose_workspace_is_gone(
    project: Project, capsys: pytest.CaptureFixture[str], live_identity: proc.Identity
) -> None:
    blocked = worker(project, "RQ-0002", Lifecycle.BLOCKED_PUSH, make_workspace=False)
    save_workers(project, blocked)
    code, checks = report(project.control, capsys)
    assert code == ExitCode.OK
    assert checks["workspaces"]["level"] == "warning"
    assert "RQ-0002 (blocked_push) has no workspace" in checks["workspaces"]["detail"]
    assert "ralph discard RQ-0002" in checks["workspaces"]["fix"]

    running = worker(
        project,
        "RQ-0001",
        Lifecycle.RUNNING,
        job=job_for(project, "RQ-0001", live_identity),
        make_workspace=False,
    )
    save_workers(project, running, blocked)
    code, checks = report(project.control, capsys)
    assert code == ExitCode.ERROR
    assert checks["workspaces"]["level"] == "fail"
    assert "RQ-0001 (running) has no workspace" in checks["workspaces"]["detail"]
    assert "ralph cancel RQ-0001" in checks["workspaces"]["fix"]
