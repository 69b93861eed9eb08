"""Several hosts on one remote, through real ticks: one bare origin, several control clones each with
its own state, `ralph run` as cron starts it (a process of its own), and a scripted agent that notes
where and when it ran in a file outside every repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE, git
from harness import Project, archive_count, make_project

from ralph import clock
from ralph.checkout import open_checkout
from ralph.claims import Claims, facts_ref
from ralph.state import Lifecycle, State, load_state

Clone = Callable[[str], Path]

# The agent notes `start|end <epoch seconds> <workspace>` (the workspace names the host and the task).
NOTE = 'echo "{what} $(date +%s.%N) $PWD" >> {log}'


def agent_run(log: Path, middle: str = "sleep 0.2") -> str:
    steps = [NOTE.format(what="start", log=log), middle, NOTE.format(what="end", log=log)]
    return "scripted-agent: run " + "; ".join(steps)


def command(host: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`ralph ARGS` on `host`, in a process of its own; the host is named after its directory."""
    return subprocess.run(
        [sys.executable, "-m", "ralph", "-C", str(host), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "RALPH_HOST": host.name, **(env or {})},
        timeout=120,
    )


def tick(host: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One `ralph run` on `host`, as cron starts it."""
    return command(host, "run", "--allow-root", *args, env=env)


def state_of(host: Path) -> State:
    paths = open_checkout(host).paths
    return load_state(paths.state, now=clock.now(), target_branch=BASE, remote="origin")


def remote_facts(origin: Path, task_id: str) -> dict[str, Any] | None:
    shown = subprocess.run(
        ["git", "show", f"{facts_ref(task_id)}:task.json"], cwd=origin, capture_output=True, text=True
    )
    return None if shown.returncode else dict(json.loads(shown.stdout))


def remote_claims(origin: Path) -> list[str]:
    return git(origin, "for-each-ref", "--format=%(refname)", "refs/ralph/claims/").splitlines()


def runs(log: Path) -> dict[str, list[tuple[str, float, float]]]:
    """Per task, every run of its agent: (host, start, end)."""
    started: dict[str, tuple[str, float]] = {}
    found: dict[str, list[tuple[str, float, float]]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        what, at, where = line.split(" ", 2)
        workspace = Path(where)
        task_id, host = workspace.name, workspace.parents[2].name
        if what == "start":
            started[f"{host}/{task_id}"] = (host, float(at))
        else:
            _, began = started.pop(f"{host}/{task_id}")
            found.setdefault(task_id, []).append((host, began, float(at)))
    assert not started, f"agents that never ended: {started}"
    return found


@pytest.fixture
def project(origin: Path, control: Path) -> Project:
    # The hosts are named by their directories: host1 is the project's own control clone.
    host1 = control.parent / "host1"
    control.rename(host1)
    return make_project(
        origin, host1, sandbox={"mode": "none"}, ci={"command": ["true"]}, parallel={"workers": 4}
    )


# --- many hosts, one queue ------------------------------------------------------------------------


def test_three_hosts_ticking_at_once_land_every_task_exactly_once(
    project: Project, clone: Clone, tmp_path: Path
) -> None:
    log = tmp_path / "agents.log"
    ids = [project.add(f"Task {n}", description=agent_run(log)) for n in range(1, 31)]
    hosts = [project.control, clone("host2"), clone("host3")]
    deadline = time.monotonic() + 240  # ~50 s on a quiet machine; generous for two busy cores
    problems: list[str] = []

    def done() -> bool:
        return len(project.origin_tasks("done")) == len(ids)

    def cron(host: Path) -> None:
        while not done() and time.monotonic() < deadline and not problems:
            ticked = tick(host)
            if ticked.returncode not in (0, 75):
                problems.append(f"{host.name}: exit {ticked.returncode}: {ticked.stderr}")
            time.sleep(0.1)

    threads = [threading.Thread(target=cron, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems, problems[0]
    assert done(), f"{len(project.origin_tasks('done'))}/{len(ids)} landed in time"

    # Every task landed exactly once, and the archive holds each once, all done.
    archive = project.origin_tasks("done")
    assert sorted(t["id"] for t in archive) == sorted(ids)
    assert {t["status"] for t in archive} == {"done"}
    assert project.origin_tasks("queue") == []
    assert [archive_count(project.origin, t) for t in ids] == [1] * len(ids)
    assert remote_claims(project.origin) == []  # every landing deleted its claims with it

    # Each task's agent ran once, on one host: claims left no task to two hosts.
    ran = runs(log)
    assert sorted(ran) == sorted(ids)
    twice = {t: r for t, r in ran.items() if len(r) != 1}
    assert not twice, twice
    for task_id, [(_, start, end)] in ran.items():
        assert start <= end, task_id
    hosts_used = {r[0][0] for r in ran.values()}
    assert len(hosts_used) >= 2, f"one host did all the work: {hosts_used}"
    # Each host's own records agree: a task completed on exactly one host, nothing was lost.
    completed = [w.task_id for h in hosts for w in state_of(h).workers if w.lifecycle is Lifecycle.COMPLETED]
    assert sorted(completed) == sorted(ids)


def test_no_agent_ever_runs_on_two_hosts_at_once(project: Project, clone: Clone, tmp_path: Path) -> None:
    """Three hosts ticking at the same moment while a longer agent runs: each task's agent runs once,
    on one host."""
    log = tmp_path / "agents.log"
    ids = [project.add(f"Task {n}", description=agent_run(log, "sleep 1")) for n in range(1, 4)]
    hosts = [project.control, clone("host2"), clone("host3")]
    # All three hosts tick at the same moment, twice, while the agents run.
    for _ in range(2):
        with_threads = [threading.Thread(target=tick, args=(h,)) for h in hosts]
        for t in with_threads:
            t.start()
        for t in with_threads:
            t.join()
    time.sleep(1.5)
    for h in hosts:
        tick(h)
    ran = runs(log)
    for task_id in ids:  # one run each: no second host ever started it, overlapping or not
        spans = ran.get(task_id, [])
        assert len(spans) == 1, (task_id, spans)


# --- a host that dies --------------------------------------------------------------------------------


def test_a_killed_host_loses_its_task_to_another_after_the_ttl(
    project: Project, clone: Clone, tmp_path: Path
) -> None:
    project.configure(hosts={"claim_ttl_minutes": 0.05})  # 3 s
    log = tmp_path / "agents.log"
    # On host1 the agent does its work quickly; on host2 it takes a little longer.
    middle = 'case "$PWD" in */host1/*) echo one > work.txt;; *) sleep 1.5; echo two > work.txt;; esac'
    task = project.add("Work", description=agent_run(log, middle))
    host2 = clone("host2")
    before = git(project.origin, "rev-parse", BASE)

    # host1 starts the task, and dies right after (RALPH_CRASHPOINT: the process ends on the spot, as
    # with SIGKILL or a power cut: nothing after that step runs).
    killed = tick(project.control, env={"RALPH_CRASHPOINT": "after-save"})
    assert killed.returncode == 137, killed.stderr
    first = state_of(project.control).worker(task)
    assert first is not None and first.lifecycle is Lifecycle.RUNNING
    claims = Claims.for_checkout(open_checkout(host2))
    assert claims.read(task).claims[task].host.startswith("host1@")

    # Before the TTL, host2 leaves it alone.
    ticked = tick(host2)
    assert ticked.returncode == 0, ticked.stderr
    assert state_of(host2).workers == []
    # Idle, it leaves the stamp that lets the next ticks exit early, but with a wake-up for when the
    # claim turns stale: no push to the base would announce that.
    idle = json.loads((open_checkout(host2).paths.parallel / "idle.json").read_text())
    heartbeat = claims.read(task).claims[task].doc.heartbeat  # type: ignore[union-attr]
    stale_at = heartbeat + timedelta(minutes=0.05)
    assert idle["wake_at"] == stale_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(3.2)
    ticked = tick(host2, "--json")
    assert ticked.returncode == 0, ticked.stderr
    second = state_of(host2).worker(task)
    assert second is not None and second.lifecycle is Lifecycle.RUNNING and second.attempt == 2
    facts = remote_facts(project.origin, task)
    assert facts is not None and facts["attempts"] == 2  # the lost attempt stays counted
    assert claims.read(task).claims[task].host.startswith("host2@")

    # host1 comes back: its agent finished meanwhile, but its claim is gone. It stops the worker and
    # pushes nothing.
    ticked = tick(project.control, "--json")
    assert ticked.returncode == 0, ticked.stderr
    actions = json.loads(ticked.stdout)["actions"]
    assert [a["action"] for a in actions if a["task_id"] == task] == ["failed", "claim_lost"], actions
    back = state_of(project.control).worker(task)
    assert back is not None and back.lifecycle is Lifecycle.FAILED
    assert back.last_error is not None and back.last_error.startswith("claim lost to host2@")
    assert git(project.origin, "rev-parse", BASE) == before
    assert claims.read(task).claims[task].host.startswith("host2@")  # and it did not take it back

    # host2 lands its own work, once.
    deadline = time.monotonic() + 30
    while state_of(host2).worker(task).lifecycle is not Lifecycle.COMPLETED:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, state_of(host2).workers
        time.sleep(0.3)
        assert tick(host2).returncode == 0
    assert archive_count(project.origin, task) == 1
    assert project.origin_file("work.txt") == "two"
    assert remote_claims(project.origin) == []


# --- what every host respects ------------------------------------------------------------------------


def test_a_fresh_checkout_respects_attempts_cancellations_and_blocks_made_elsewhere(
    project: Project, clone: Clone, tmp_path: Path
) -> None:
    project.configure(agent={"max_attempts": 1})
    failing = project.add("Fails", description="scripted-agent: fail")
    hanging = project.add("Hangs", description="scripted-agent: hang")
    blocked = project.add("Blocked")
    # host1 uses the one attempt of the first, starts the second and cancels it.
    assert tick(project.control).returncode == 0
    cancelled = command(project.control, "cancel", hanging)
    assert cancelled.returncode == 0, cancelled.stderr
    # The third's landing is refused by the server's policy: it is blocked.
    hook = project.origin / "hooks" / "pre-receive"
    hook.write_text(
        '#!/bin/sh\ngrep -q " refs/heads/main$" || exit 0\necho "frozen: no landings today" >&2\nexit 1\n'
    )
    hook.chmod(0o755)
    deadline = time.monotonic() + 30
    while True:
        state = state_of(project.control)
        ends = {w.task_id: w.lifecycle for w in state.workers}
        if ends.get(failing) is Lifecycle.FAILED and ends.get(blocked) is Lifecycle.BLOCKED_PUSH:
            break
        assert time.monotonic() < deadline, ends
        time.sleep(0.3)
        assert tick(project.control).returncode == 0
    hook.unlink()
    for task_id, word in ((failing, "attempts"), (hanging, "cancelled"), (blocked, "blocked")):
        facts = remote_facts(project.origin, task_id)
        assert facts is not None and facts.get(word), (task_id, facts)

    # A new machine: a clone with no state of its own starts none of them.
    fresh = clone("fresh")
    ticked = tick(fresh)
    assert ticked.returncode == 0, ticked.stderr
    assert state_of(fresh).workers == []
    assert f"{failing}: not starting it here: no attempts left (1/1, counted on every host)" in ticked.stderr
    assert f"{hanging}: not starting it here: cancelled by host1@" in ticked.stderr
    assert f"{blocked}: not starting it here: blocked by host1@" in ticked.stderr
    # `ralph retry` from the new machine gives the first a fresh round there.
    retried = command(fresh, "retry", failing)
    assert retried.returncode == 0, retried.stderr
    # Its last tick left the idle stamp; a record changed on the remote wakes it all the same.
    assert open_checkout(fresh).paths.parallel.joinpath("idle.json").exists()
    assert tick(fresh).returncode == 0
    again = state_of(fresh).worker(failing)
    assert again is not None and (again.attempt, again.lifecycle) == (1, Lifecycle.RUNNING)


def test_single_mode_keeps_no_claims_but_respects_the_shared_record(project: Project, clone: Clone) -> None:
    project.configure(hosts={"mode": "single"}, agent={"max_attempts": 1})
    failing = project.add("Fails", description="scripted-agent: fail")
    assert tick(project.control).returncode == 0
    assert remote_claims(project.origin) == []  # no claim in single mode
    facts = remote_facts(project.origin, failing)
    assert facts is not None and facts["attempts"] == 1  # but the attempt is shared
    fresh = clone("fresh")
    ticked = tick(fresh)
    assert ticked.returncode == 0, ticked.stderr
    assert state_of(fresh).workers == []
    assert "no attempts left (1/1, counted on every host)" in ticked.stderr


def test_a_tick_claims_the_tasks_it_starts_in_one_push(project: Project) -> None:
    tasks = [project.add(f"Feature {n}") for n in range(3)]
    log = project.origin / "pushes.log"
    hook = project.origin / "hooks" / "pre-receive"
    hook.write_text(f'#!/bin/sh\n{{ cut -d" " -f3; echo --; }} >> "{log}"\n')
    hook.chmod(0o755)
    assert tick(project.control).returncode == 0
    pushes = [chunk.split() for chunk in log.read_text().split("--\n")[:-1]]
    assert len(pushes) == 1, pushes  # three claims and three attempts, one push
    assert sorted(pushes[0]) == sorted(
        [f"refs/ralph/claims/{t}" for t in tasks] + [facts_ref(t) for t in tasks]
    )
    assert {w.task_id: w.attempt for w in state_of(project.control).workers} == dict.fromkeys(tasks, 1)


def test_a_tick_starts_the_next_task_when_another_host_claims_one_of_its_batch_meanwhile(
    project: Project, clone: Clone
) -> None:
    """Another host's claim arrives while this tick's batch is being received: the batch fails as a
    whole, each task is claimed on its own, and the slot the lost task leaves goes to the next one."""
    project.configure(parallel={"workers": 2})
    first, second, third = (project.add(f"Feature {n}") for n in range(3))
    other = Claims.for_checkout(open_checkout(clone("host2")))
    assert other.claim(second, 1, clock.now()).started
    theirs = git(project.origin, "rev-parse", f"refs/ralph/claims/{second}")
    git(project.origin, "update-ref", "-d", f"refs/ralph/claims/{second}")
    hook = project.origin / "hooks" / "pre-receive"
    hook.write_text(  # once: host2's claim appears outside the push's quarantine
        f'#!/bin/sh\ncat >/dev/null\nrm "$0"\n'
        f"env -u GIT_QUARANTINE_PATH git update-ref refs/ralph/claims/{second} {theirs} ''\n"
    )
    hook.chmod(0o755)
    ticked = tick(project.control)
    assert ticked.returncode == 0, ticked.stderr
    assert not hook.exists()  # the batch's push met it
    assert {w.task_id for w in state_of(project.control).workers} == {first, third}
    assert f"{second} is claimed by " in ticked.stderr and "; not started here" in ticked.stderr


# --- a remote that refuses claims ------------------------------------------------------------------------


def test_a_remote_refusing_refs_ralph_starts_nothing_and_says_so(project: Project) -> None:
    task = project.add("Feature")
    hook = project.origin / "hooks" / "update"
    hook.write_text(
        '#!/bin/sh\ncase "$1" in refs/ralph/*) echo "refs/ralph/ is reserved" >&2; exit 1;; esac\nexit 0\n'
    )
    hook.chmod(0o755)
    ticked = tick(project.control)
    assert ticked.returncode == 1, ticked.stderr
    assert ticked.stderr.splitlines()[-1] == (
        f"ralph: error: cannot claim {task}: origin refuses it (refs/ralph/tasks/{task}: [remote rejected] "
        f"(hook declined): refs/ralph/ is reserved error: hook declined to update refs/ralph/tasks/{task}); "
        "it must allow pushes to refs/ralph/ (`ralph doctor` checks, and says what to configure); "
        "nothing was started"
    )
    assert "cannot claim" not in "".join(ticked.stderr.splitlines()[:-1])  # said once
    assert "Traceback" not in ticked.stderr
    assert state_of(project.control).workers == []
    assert git(project.origin, "for-each-ref", "refs/ralph/") == ""


# --- the fenced landing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("broken", [False, True], ids=["workspace", "broken-workspace"])
def test_a_claim_lost_just_before_the_landing_push_takes_its_task_out_of_the_train(
    project: Project, tmp_path: Path, broken: bool
) -> None:
    """With `broken`, the lost task's workspace cannot be saved to the attic: it fails all the same
    (it stayed in the train, and the landing lost the claim again on every pass, without end)."""
    keep, lose = project.add("Keep"), project.add("Lose")
    assert tick(project.control).returncode == 0
    # Another host takes `lose` over on the server while the landing push is on its way: a pre-receive
    # hook replaces the claim under the push's lease, once.
    rival = _rival_claim(project.origin, lose)
    hook = project.origin / "hooks" / "pre-receive"
    pushes = project.origin / "pushes.log"
    hook.write_text(
        "#!/bin/sh\n"
        f'input=$(cat); echo "$input" >> "{pushes}"\n'
        'echo "$input" | grep -q " refs/heads/main$" || exit 0\n'
        "unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES\n"
        "GIT_DIR=$(pwd); export GIT_DIR\n"
        f"git update-ref refs/ralph/claims/{lose} {rival}\n"
        'rm -f "$0"\n'
        "exit 0\n"
    )
    hook.chmod(0o755)
    deadline = time.monotonic() + 60
    broke = False
    while state_of(project.control).worker(keep).lifecycle is not Lifecycle.COMPLETED:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, state_of(project.control).workers
        project.wait_for_jobs()
        ticked = tick(project.control)
        assert ticked.returncode == 0, ticked.stderr
        ahead = state_of(project.control).worker(lose)
        if broken and not broke and ahead is not None and ahead.lifecycle is Lifecycle.CHECKING:
            (Path(ahead.workspace_path) / ".git" / "HEAD").write_text("not a ref\n")
            broke = True
    assert broke == broken  # the broken case did break the workspace before the landing
    # The push the hook saw moved the base and deleted both claims, under their leases: the rival's
    # claim failed its lease, so nothing of it happened.
    fenced = pushes.read_text().split()
    assert f"refs/ralph/claims/{keep}" in fenced and f"refs/ralph/claims/{lose}" in fenced
    state = state_of(project.control)
    kept, lost = state.worker(keep), state.worker(lose)
    assert kept is not None and kept.lifecycle is Lifecycle.COMPLETED
    assert lost is not None and lost.lifecycle is Lifecycle.FAILED
    assert lost.last_error == "claim lost to rival@00000000"
    assert archive_count(project.origin, keep) == 1 and archive_count(project.origin, lose) == 0
    assert [t["id"] for t in project.origin_tasks("queue")] == [lose]
    # The rival's claim is untouched; the landed task's claim is gone with the landing.
    assert remote_claims(project.origin) == [f"refs/ralph/claims/{lose}"]
    assert git(project.origin, "rev-parse", f"refs/ralph/claims/{lose}") == rival
    # The landing tick pruned the landed task's shared record: refs/ralph/ keeps only work to do.
    facts = git(project.origin, "for-each-ref", "--format=%(refname)", "refs/ralph/tasks/").splitlines()
    assert facts == [facts_ref(lose)]


def _log_pushes(origin: Path) -> Path:
    """A pre-receive hook on `origin` that writes the refs of each push it takes, a push a line."""
    log = origin / "pushes.log"
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(f'#!/bin/sh\ncut -d" " -f3 | tr "\\n" " " >> "{log}"; echo >> "{log}"\n')
    hook.chmod(0o755)
    return log


def _tick_until(project: Project, tasks: list[str], lifecycle: Lifecycle) -> None:
    deadline = time.monotonic() + 60
    while any(
        getattr(state_of(project.control).worker(t), "lifecycle", None) is not lifecycle for t in tasks
    ):
        assert time.monotonic() < deadline, state_of(project.control).workers
        project.wait_for_jobs()
        ticked = tick(project.control)
        assert ticked.returncode == 0, ticked.stderr


def test_a_landing_deletes_its_tasks_claims_and_facts_in_its_own_push(project: Project) -> None:
    """The facts of the landed tasks went in a push of their own after the landing: one more round
    trip to the remote every landing."""
    tasks = [project.add("One"), project.add("Two")]
    log = _log_pushes(project.origin)
    _tick_until(project, tasks, Lifecycle.COMPLETED)
    pushes = [line.split() for line in log.read_text().splitlines()]
    (landing,) = [refs for refs in pushes if "refs/heads/main" in refs]
    assert sorted(landing) == sorted(
        ["refs/heads/main", *(f"refs/ralph/claims/{t}" for t in tasks), *(facts_ref(t) for t in tasks)]
    )
    assert pushes[-1] == landing  # nothing after it: nothing left to prune
    assert git(project.origin, "for-each-ref", "refs/ralph/") == ""


def test_a_task_claimed_again_in_the_tick_that_lands_it_leaves_no_facts_behind(project: Project) -> None:
    """`ralph retry` gives a blocked task back to the train; the landing tick claims it again, counting
    its attempt in new facts. The prune after the landing leased the facts read before that claim,
    lost its lease, and the landed task's facts stayed on the remote. (With no CI, the tick that
    claims the task again is the tick that lands it.)"""
    project.configure(ci={"command": []})
    task = project.add("Blocked once")
    hook = project.origin / "hooks" / "pre-receive"
    hook.write_text('#!/bin/sh\ngrep -q " refs/heads/main$" && { echo "closed" >&2; exit 1; }\nexit 0\n')
    hook.chmod(0o755)
    _tick_until(project, [task], Lifecycle.BLOCKED_PUSH)
    hook.unlink()
    assert command(project.control, "retry", task).returncode == 0
    assert project.worker(task).lifecycle is Lifecycle.INTEGRATING
    assert tick(project.control).returncode == 0
    assert project.worker(task).lifecycle is Lifecycle.COMPLETED
    assert git(project.origin, "for-each-ref", "refs/ralph/") == ""


def test_a_landed_tasks_facts_changed_meanwhile_do_not_stop_the_landing(project: Project) -> None:
    """Another host changes a task's facts while its landing push is on its way. Deleting them was only
    tidying: the landing goes through without them, at once, and the changed facts are left alone."""
    task = project.add("Lands anyway")
    hook = project.origin / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        'grep -q " refs/heads/main$" || exit 0\n'
        "unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES\n"
        "GIT_DIR=$(pwd); export GIT_DIR\n"
        f"changed=$(git commit-tree {facts_ref(task)}^{{tree}} -m 'ralph: {task} changed elsewhere')\n"
        f"git update-ref {facts_ref(task)} $changed\n"
        "git rev-parse $changed > changed.sha\n"
        'rm -f "$0"\n'
    )
    hook.chmod(0o755)
    _tick_until(project, [task], Lifecycle.COMPLETED)
    worker = project.worker(task)
    assert worker.push_attempts == 0 and worker.last_error is None
    events = [e["event"] for e in project.events() if e["task_id"] == task]
    assert "blocked_push" not in events and "push_race" not in events, events
    assert archive_count(project.origin, task) == 1
    changed = (project.origin / "changed.sha").read_text().strip()
    assert git(project.origin, "rev-parse", facts_ref(task)) == changed


def test_a_remote_refusing_to_delete_facts_does_not_stop_the_landing(project: Project) -> None:
    """The landing push deletes the landed tasks' facts; a remote whose policy refuses that refuses the
    whole atomic push. The landing goes again without them, at once, and nothing is blocked."""
    task = project.add("Lands anyway")
    hook = project.origin / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        "while read old new ref; do\n"
        '  case "$ref" in refs/ralph/tasks/*) [ "$new" = 0000000000000000000000000000000000000000 ] &&'
        ' { echo "records are kept here" >&2; exit 1; } ;; esac\n'
        "done\n"
        "exit 0\n"
    )
    hook.chmod(0o755)
    _tick_until(project, [task], Lifecycle.COMPLETED)
    events = [e["event"] for e in project.events() if e["task_id"] == task]
    assert "blocked_push" not in events and "push_race" not in events, events
    assert archive_count(project.origin, task) == 1
    assert git(project.origin, "for-each-ref", "--format=%(refname)", "refs/ralph/") == facts_ref(task)


def test_a_task_the_landing_must_claim_first_leaves_no_facts_behind(project: Project) -> None:
    """A worker in flight without a claim (from before claims, or released by an error) is claimed by
    the landing itself, which counts its attempt in new facts; the landing push deleted the facts
    read before that claim only, and the prune after it lost its lease: the facts stayed."""
    project.configure(ci={"command": []})
    task = project.add("Claimed at the landing")
    assert tick(project.control).returncode == 0
    project.wait_for_jobs()
    stalled = subprocess.Popen(
        [sys.executable, "-m", "ralph", "-C", str(project.control), "run", "--allow-root"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RALPH_HOST": project.control.name, "RALPH_STALL": "before-push:3"},
    )
    state_file = open_checkout(project.control).paths.state
    deadline = time.monotonic() + 30
    while not (json.loads(state_file.read_text()).get("train") or {}).get("pushing"):
        assert stalled.poll() is None and time.monotonic() < deadline, stalled.stderr
        time.sleep(0.05)
    # While the tick waits at the push: the claim is gone, here and on the remote.
    git(project.control, "update-ref", "-d", f"refs/ralph/held/{task}")
    git(project.origin, "update-ref", "-d", f"refs/ralph/claims/{task}")
    assert stalled.wait(timeout=60) == 0, stalled.stderr
    assert project.worker(task).lifecycle is Lifecycle.COMPLETED
    assert git(project.origin, "for-each-ref", "refs/ralph/") == ""


def _rival_claim(origin: Path, task_id: str) -> str:
    """A live claim of `task_id` by another host, written into origin's object store."""
    now = clock.format_z(clock.now())
    doc = {
        "task_id": task_id,
        "host": "rival@00000000",
        "token": "0123456789abcdef",
        "attempt": 2,
        "started_at": now,
        "heartbeat": now,
        "lifecycle": "running",
    }
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=origin,
        input=json.dumps(doc),
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = subprocess.run(
        ["git", "mktree"],
        cwd=origin,
        input=f"100644 blob {blob}\tclaim.json\n",
        capture_output=True,
        text=True,
    ).stdout.strip()
    return git(origin, "commit-tree", tree, "-m", f"ralph: {task_id} claimed by rival")


def test_a_retry_made_on_another_host_gives_the_task_a_fresh_round_on_the_host_that_gave_up(
    project: Project, clone: Clone
) -> None:
    """host1 used up the task's attempts (its own record says so); `ralph retry` on a laptop with no
    record of it clears the shared one, and host1's next tick starts the task over, attempt 1."""
    project.configure(agent={"max_attempts": 1})
    failing = project.add("Fails", description="scripted-agent: fail")
    assert tick(project.control).returncode == 0
    deadline = time.monotonic() + 30
    while (
        worker := state_of(project.control).worker(failing)
    ) is None or worker.lifecycle is not Lifecycle.FAILED:
        assert time.monotonic() < deadline, worker
        time.sleep(0.3)
        assert tick(project.control).returncode == 0
    assert tick(project.control).returncode == 0  # nothing to start: the attempt is used up
    assert state_of(project.control).worker(failing).lifecycle is Lifecycle.FAILED  # type: ignore[union-attr]
    laptop = clone("laptop")
    retried = command(laptop, "retry", failing)
    assert retried.returncode == 0, retried.stderr
    assert "may start again on any host" in retried.stdout
    ticked = tick(project.control)
    assert ticked.returncode == 0, ticked.stderr
    again = state_of(project.control).worker(failing)
    assert again is not None and (again.attempt, again.lifecycle) == (1, Lifecycle.RUNNING)
    log = (open_checkout(project.control).paths.run_dir(failing) / "agent.log").read_text()
    assert log.count(f"started agent for {failing}") == 2
