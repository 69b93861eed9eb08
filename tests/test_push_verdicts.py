"""What a remote says when it refuses a push, read as real git prints it: a race and a temporary refusal
are tried again with backoff, a policy blocks at once.

The servers are played by a bare origin whose hooks print what GitHub, GitLab, Gitea, Gogs and Gerrit
print; a proc-receive hook that answers with its own reason, as forges and JGit do; and
git-http-backend behind an HTTP server that fails as a proxy or a busy forge does. Every phrase in
ralph.git's lists goes through real git once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import BASE, git
from git_http import DROP, GitHttpServer
from harness import (
    Project,
    all_landed,
    archive_count,
    install_declining_hook,
    install_flaky_hook,
    make_project,
)

from ralph import git as ralph_git
from ralph.git import Git, PushResult, PushStatus, push_with_lease
from ralph.state import Lifecycle, State

Push = Callable[[], PushResult]

PERMANENT, TRANSPORT, RACE = PushStatus.PERMANENT, PushStatus.TRANSPORT, PushStatus.RACE


@pytest.fixture
def push(control: Path) -> Push:
    """Push a new commit on top of origin's main with a lease, as a landing does."""
    g = Git(control)

    def attempt() -> PushResult:
        g.run("fetch", "-q", "origin")
        tip = g.run("rev-parse", f"origin/{BASE}").out
        commit = g.run("commit-tree", "-p", tip, "-m", "a change", f"{tip}^{{tree}}").out
        return push_with_lease(g, remote="origin", commit=commit, branch=BASE, expected=tip, timeout=30)

    return attempt


# --- every phrase, through real git ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("phrase", "status"),
    [(p, PERMANENT) for p in ralph_git.POLICY_PHRASES]
    + [(p, TRANSPORT) for p in ralph_git.TEMPORARY_PHRASES]
    + [(p, PERMANENT) for p in ralph_git.REFUSAL_PHRASES],
)
def test_every_phrase_a_hook_prints_reaches_its_verdict(
    origin: Path, push: Push, phrase: str, status: PushStatus
) -> None:
    """git prefixes a hook's lines with `remote: ` and pads them; the phrase is found, in any case."""
    install_declining_hook(origin, f"Server says: {phrase.upper()} (see the admin)")
    result = push()
    assert result.status is status, result
    assert result.message.startswith("[remote rejected] (pre-receive hook declined): Server says: ")


# --- what real servers print ---------------------------------------------------------------------------

SERVERS = [
    # The server: a hook that sheds load.
    ("temporary failure, please try again later (503)", TRANSPORT),
    # GitLab (lib/gitlab/git_access.rb) while a repository moves between storages.
    ("GitLab: The repository is temporarily read-only. Please try again later.", TRANSPORT),
    # GitLab's hook when it cannot reach GitLab.
    ("GitLab: Failed to authorize your Git request: internal API unreachable", TRANSPORT),
    ("GitLab: API is not accessible", TRANSPORT),
    ("GitLab: 500 Internal Server Error", TRANSPORT),
    # Gitea's and Gogs' hooks when their server fails.
    (
        "Gitea: Internal Server Error\nUnable to contact gitea: Post http://localhost:3000/api/internal/"
        "hook/pre-receive/a/b: dial tcp 127.0.0.1:3000: connect: connection refused",
        TRANSPORT,
    ),
    ("Gogs: Internal error", TRANSPORT),
    ("error: pre-receive hook timed out after 120 seconds", TRANSPORT),
    ("fatal: write error: No space left on device", TRANSPORT),
    # GitHub branch protection and rulesets.
    (
        "error: GH006: Protected branch update failed for refs/heads/main.\n"
        "error: At least 1 approving review is required by reviewers with write access.",
        PERMANENT,
    ),
    (
        "error: GH006: Protected branch update failed for refs/heads/main.\n"
        "error: Cannot change this locked branch",  # a named policy outweighs "locked"
        PERMANENT,
    ),
    (
        "error: GH013: Repository rule violations found for refs/heads/main.\n"
        "- Changes must be made through a pull request.",
        PERMANENT,
    ),
    ("GitLab: You are not allowed to push code to protected branches on this project.", PERMANENT),
    ("GitLab: You can't push code to a read-only GitLab instance.", PERMANENT),
    ("Gitea: Not allowed to push to protected branch main", PERMANENT),
    # A hook that declines without saying why: taken at its word.
    ("commit message does not follow the team's convention", PERMANENT),
    ("", PERMANENT),
]


@pytest.mark.parametrize(("message", "status"), SERVERS, ids=[m.split("\n")[0][:50] for m, _ in SERVERS])
@pytest.mark.parametrize("hook", ["pre-receive", "update"])
def test_what_servers_print_from_their_hooks(
    origin: Path, push: Push, message: str, status: PushStatus, hook: str
) -> None:
    install_declining_hook(origin, message, hook=hook)
    result = push()
    assert result.status is status, result
    declined = "pre-receive hook declined" if hook == "pre-receive" else "hook declined"
    assert result.message.startswith(f"[remote rejected] ({declined})")
    if message:
        assert message.splitlines()[0] in result.message
    assert git(origin, "rev-list", "--count", BASE) == "1"  # nothing landed


PROC_RECEIVE = """#!{python}
# A proc-receive hook (git >= 2.29) answers for every ref with its own reason, as forges do.
import sys
from pathlib import Path

inp, out = sys.stdin.buffer, sys.stdout.buffer
here = Path({here!r})


def read():
    size = int(inp.read(4), 16)
    return None if size == 0 else inp.read(size - 4)


def write(data):
    out.write(b"%04x" % (len(data) + 4) + data)


while read() is not None:
    pass
write(b"version=1\\n")
out.write(b"0000")
out.flush()
refs = []
while (line := read()) is not None:
    refs.append(line.split()[2])
sys.stderr.write((here / "said").read_text())
for ref in refs:
    write(b"ng " + ref + b" " + (here / "reason").read_text().encode() + b"\\n")
out.write(b"0000")
out.flush()
"""


@pytest.mark.parametrize(
    ("reason", "said", "status"),
    [
        # GitHub during an incident.
        ("failure", "fatal error in commit_refs\n", TRANSPORT),
        # Gerrit (ReceiveCommits) when it cannot read the repository.
        ("internal server error", "", TRANSPORT),
        # JGit's lock failure: another push got there first.
        ("failed to lock", "", RACE),
        ("non-fast forward", "", RACE),
        ("prohibited by Gerrit: not permitted: update", "", PERMANENT),
        ("failure", "", PERMANENT),  # nothing says it is temporary
    ],
)
def test_reasons_a_server_gives_in_its_verdict(
    origin: Path, push: Push, reason: str, said: str, status: PushStatus
) -> None:
    hooks = origin / "hooks"
    (hooks / "reason").write_text(reason)
    (hooks / "said").write_text(said)
    hook = hooks / "proc-receive"
    hook.write_text(PROC_RECEIVE.format(python=sys.executable, here=str(hooks)))
    hook.chmod(0o755)
    git(origin, "config", "receive.procReceiveRefs", f"refs/heads/{BASE}")
    result = push()
    assert result.status is status, result
    assert result.message.startswith(f"[remote rejected] ({reason})")


# --- a server behind HTTP ---------------------------------------------------------------------------


@pytest.fixture
def http_origin(origin: Path, control: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHttpServer]:
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "file:http")
    git(origin, "config", "http.receivepack", "true")
    server = GitHttpServer(origin.parent)
    git(control, "config", "remote.origin.pushurl", server.url(origin.name))
    yield server
    server.close()


@pytest.mark.parametrize(
    ("method", "fault", "status", "says"),
    [
        ("GET", 502, TRANSPORT, "The requested URL returned error: 502"),
        ("GET", 503, TRANSPORT, "The requested URL returned error: 503"),
        ("GET", 429, TRANSPORT, "The requested URL returned error: 429"),
        # The refs were read, then the push itself failed: git says so over three lines.
        ("POST", 503, TRANSPORT, "the remote end hung up unexpectedly"),
        ("POST", 500, TRANSPORT, "the remote end hung up unexpectedly"),
        ("POST", DROP, TRANSPORT, "the remote end hung up unexpectedly"),
        ("GET", 403, PERMANENT, "The requested URL returned error: 403"),
        ("GET", 401, PERMANENT, "terminal prompts disabled"),
    ],
)
def test_what_git_prints_against_a_failing_http_server(
    http_origin: GitHttpServer, push: Push, method: str, fault: int, status: PushStatus, says: str
) -> None:
    assert push().status is PushStatus.OK  # the server works, until it does not
    http_origin.faults[method] = fault
    result = push()
    assert result.status is status, result
    assert says in result.message


@pytest.fixture
def ssh_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "file:ssh")


def test_an_unreachable_ssh_server_is_a_transport_failure(
    ssh_allowed: None, control: Path, push: Push
) -> None:
    git(control, "config", "remote.origin.pushurl", "ssh://git@127.0.0.1:1/nobody.git")
    result = push()
    assert result.status is TRANSPORT, result


def test_the_phrase_lists_do_not_overlap() -> None:
    """A phrase in two lists would make its verdict depend on the order they are read in."""
    lists = [
        ralph_git.RACE_PHRASES,
        ralph_git.POLICY_PHRASES,
        ralph_git.TEMPORARY_PHRASES,
        ralph_git.REFUSAL_PHRASES,
    ]
    for i, one in enumerate(lists):
        assert one == tuple(p.lower() for p in one)
        for other in lists[i + 1 :]:
            assert not {p for p in one for q in other if p in q or q in p}


# --- end to end: a flaky server -----------------------------------------------------------------------


def test_every_task_lands_through_a_server_that_declines_half_the_pushes_for_now(
    origin: Path, control: Path
) -> None:
    """The issue's measure: a hook that sheds half the pushes with a temporary message blocked 3 of 10
    tasks after one attempt. Each is tried again and lands."""
    project: Project = make_project(origin, control, parallel={"push_backoff_ms": [50]})
    ids = [project.add(f"Feature {n}") for n in range(10)]
    pushes = install_flaky_hook(origin, "temporary failure, please try again later (503)")

    def never_blocked(state: State) -> None:
        blocked = [w.task_id for w in state.workers if w.lifecycle is Lifecycle.BLOCKED_PUSH]
        assert not blocked, [(w.task_id, w.last_error) for w in state.workers if w.task_id in blocked]

    state = project.run_until(all_landed(10), every=never_blocked, workers=4, timeout=240)
    assert all(archive_count(project.origin, task) == 1 for task in ids)
    declined = (int(pushes.read_text()) + 1) // 2
    assert declined >= 2  # the server did shed pushes (a train lands several tasks in one), and
    assert any(w.push_attempts for w in state.workers)  # each one was tried again, none given up on
