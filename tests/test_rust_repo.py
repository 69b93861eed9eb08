"""A repository the Rust ralph manages works unchanged: its config.jsonc (CI gate, runner, custom queue
files, id format), its queue.jsonc and done.jsonc byte for byte, its .gitignore; and a landing's diff
of the done archive is exactly the moved task."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import BASE, git
from harness import CI_SCRIPT, SCRIPTED_AGENT, Project
from rust_formats import NINE, WHOLE, rust_file, rust_task, schema_problems

from ralph.state import Lifecycle

QUEUE = ".ralph/tasks/queue.jsonc"
DONE = ".ralph/tasks/done.jsonc"


def rust_project(origin: Path, control: Path, tmp_path: Path, queue: list[dict[str, object]]) -> Project:
    """The control clone as the Rust ralph set it up, pushed: no ralph file at all."""
    # The claude preset sends the prompt on stdin after its own flags; the scripted agent reads stdin
    # when its first argument is "-".
    agent = tmp_path / "bin" / "claude"
    agent.parent.mkdir()
    agent.write_text(f'#!/bin/sh\nexec {sys.executable} {SCRIPTED_AGENT} - "$@"\n')
    agent.chmod(0o755)
    config = {
        "version": 2,
        "queue": {"file": QUEUE, "done_file": DONE, "id_prefix": "OPS", "id_width": 3},
        "agent": {
            "runner": "claude",
            "model": "sonnet",
            "claude_bin": str(agent),
            "phases": 3,
            "ci_gate": {"enabled": True, "argv": [sys.executable, ".ci-check.py"]},
        },
        "parallel": {"workers": 2, "workspace_root": ".ralph/workspaces"},
    }
    ralph_dir = control / ".ralph"
    (ralph_dir / "tasks").mkdir(parents=True)
    (ralph_dir / "config.jsonc").write_text("// the Rust ralph's config\n" + json.dumps(config, indent=2))
    (control / QUEUE).write_bytes(rust_file(*queue))
    (control / DONE).write_bytes(
        rust_file(
            rust_task("OPS-001", status="done", created_at=WHOLE, updated_at=WHOLE, completed_at=WHOLE),
            rust_task("OPS-002", status="rejected"),
        )
    )
    # What `ralph init` of the Rust ralph ignores: not .ralph/cache/.
    (control / ".gitignore").write_text(".ralph/logs/\n.ralph/workspaces/\n.ralph/trust.jsonc\n")
    (control / ".ci-check.py").write_text(CI_SCRIPT)
    project = Project(origin=origin, control=control)
    project.commit_and_push("Set up the Rust ralph")
    return project


def file_at(origin: Path, name: str, rev: str = BASE) -> bytes:
    return git(origin, "show", f"{rev}:{name}").encode()


def test_a_landing_in_a_rust_repository_changes_only_the_moved_task(
    origin: Path, control: Path, tmp_path: Path
) -> None:
    queue = [
        rust_task("OPS-003", title="Lands", description="Write the task file."),
        rust_task(
            "OPS-004", depends_on=["OPS-003 "], notes=[""], scheduled_start="2026-01-01T09:00:00+02:00"
        ),
    ]
    project = rust_project(origin, control, tmp_path, queue)
    done_before = file_at(origin, DONE)
    state = project.run_until(
        lambda s: any(w.lifecycle is Lifecycle.COMPLETED for w in s.workers), timeout=120
    )
    landed = next(w for w in state.workers if w.lifecycle is Lifecycle.COMPLETED)
    assert landed.task_id == "OPS-003"  # its dependent waits, as its depends_on (with a space) says
    archive = git(origin, "log", "--format=%H %B%x00", BASE).split("\0")
    sha = next(entry.split()[0] for entry in archive if "ralph: archive OPS-003" in entry)

    queue_after, done_after = file_at(origin, QUEUE, sha), file_at(origin, DONE, sha)
    assert queue_after == rust_file(queue[1])  # the queue lost exactly that task, nothing else moved
    diff = git(origin, "diff", "-U0", f"{sha}~1", sha, "--", DONE).splitlines()
    removed = [line for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    assert removed == []
    moved = json.loads(done_after)["tasks"][-1]
    assert len(added) == len(json.dumps(moved, indent=2, ensure_ascii=False).splitlines())
    assert done_after.startswith(done_before[: -len("\n  ]\n}")])
    assert (moved["id"], moved["status"], moved["created_at"]) == ("OPS-003", "done", NINE)
    assert len(moved["completed_at"]) == len(NINE)  # written the Rust ralph's way: 9 digits
    assert not done_after.endswith(b"\n")  # no newline added where the Rust ralph writes none
    assert schema_problems(queue_after) == schema_problems(done_after) == []

    # The configured gate ran (not `make ci`), through the configured runner binary.
    ci_log = project.paths.run_dir("OPS-003") / "ci.log"
    assert ci_log.exists()
    assert git(origin, "show", f"{landed.landed_sha}:tasks/OPS-003.md")


def test_doing_tasks_start_first(origin: Path, control: Path, tmp_path: Path) -> None:
    queue = [rust_task("OPS-003"), rust_task("OPS-004", status="doing")]
    project = rust_project(origin, control, tmp_path, queue)
    project.tick(workers=1)
    assert [w.task_id for w in project.state().workers] == ["OPS-004"]


def test_a_resumed_doing_task_lands(origin: Path, control: Path, tmp_path: Path) -> None:
    project = rust_project(origin, control, tmp_path, [rust_task("OPS-003", status="doing")])
    state = project.run_until(
        lambda s: bool(s.workers) and s.workers[0].lifecycle in Lifecycle.terminal(), timeout=120
    )
    assert state.workers[0].lifecycle is Lifecycle.COMPLETED


def test_only_starts_one_task_out_of_order_and_drafts_run_when_asked(
    origin: Path, control: Path, tmp_path: Path
) -> None:
    queue = [rust_task("OPS-003"), rust_task("OPS-004"), rust_task("OPS-005", status="draft")]
    project = rust_project(origin, control, tmp_path, queue)
    project.tick(only="OPS-004")
    assert [w.task_id for w in project.state().workers] == ["OPS-004"]
    project.tick(workers=3)
    assert sorted(w.task_id for w in project.state().workers) == ["OPS-003", "OPS-004"]
    project.tick(workers=3, include_draft=True)
    assert sorted(w.task_id for w in project.state().workers) == ["OPS-003", "OPS-004", "OPS-005"]
