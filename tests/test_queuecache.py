"""The queue index kept by blob ids (ralph.queuecache): the same answers as the models, never trusted
when it does not match the files, the code or its own checksum."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE, git
from harness import Project, all_landed, make_project
from test_queue import COMPLETE_TASK, NOW, document, task, worker

from ralph.checkout import open_checkout
from ralph.config import QueueConfig
from ralph.errors import QueueError
from ralph.git import Git
from ralph.queue import select_runnable
from ralph.queuecache import INDEX_NAME, blob_id, index_key, keep_landed, load_index, read_pair, save_index
from ralph.queues import QueueIndex, Queues
from ralph.state import Lifecycle

NAMES = ("origin/main:.ralph/queue.json", "origin/main:.ralph/done.json")


def data(*tasks: dict[str, Any]) -> bytes:
    return (json.dumps(document(*tasks), indent=2) + "\n").encode()


def read(
    cache: Path, queue: bytes, done: bytes, config: QueueConfig | None = None, write: bool = True
) -> Queues:
    return read_pair(
        (blob_id(queue), blob_id(done)),
        lambda: (queue, done),
        sources=NAMES,
        names=NAMES,
        config=config or QueueConfig(),
        cache=cache,
        write=write,
    )


# A queue with every case selection distinguishes: each status, dependencies met and not (in either
# file), a schedule past and future, and workers in every lifecycle that matters.
MIXED_QUEUE = (
    task("RQ-0001"),
    task("RQ-0002", status="doing", depends_on=["RQ-0003"], scheduled_start="2999-01-01T00:00:00Z"),
    task("RQ-0003", depends_on=["RQ-0001"]),
    task("RQ-0004", status="draft"),
    task("RQ-0005", status="draft", depends_on=["RQ-0020"]),
    task("RQ-0006", depends_on=["RQ-0020", "RQ-0021"]),
    task("RQ-0007", scheduled_start="2026-11-21T09:00:00Z"),
    task("RQ-0008", scheduled_start="2026-11-21T11:00:00+00:00"),
    task("RQ-0009", scheduled_start="not a time"),
    task("RQ-0010", status="done"),
    task("RQ-0011", status="rejected"),
    task("RQ-0012"),
    task("RQ-0013"),
    task("RQ-0014"),
    task("RQ-0015"),
    task("RQ-0016", depends_on=["RQ-0010", "RQ-0011"]),
    {**copy.deepcopy(COMPLETE_TASK), "id": "RQ-0017", "depends_on": [], "blocks": [], "status": "todo"},
    task("RQ-0018"),
)
MIXED_DONE = (task("RQ-0020", status="done"), task("RQ-0021", status="rejected"))
MIXED_WORKERS = {
    w.task_id: w
    for w in (
        worker("RQ-0012", Lifecycle.RUNNING),
        worker("RQ-0013", Lifecycle.FAILED),  # its retry time has come
        worker("RQ-0014", Lifecycle.FAILED, next_attempt_at=NOW + timedelta(minutes=5)),
        worker("RQ-0015", Lifecycle.FAILED, attempt=3),
        worker("RQ-0016", Lifecycle.COMPLETED),
        worker("RQ-0018", Lifecycle.BLOCKED_PUSH),
    )
}


@pytest.mark.parametrize("include_draft", [False, True])
@pytest.mark.parametrize("now", [NOW, NOW + timedelta(days=400_000)])
def test_selection_from_a_kept_index_is_selection_from_the_models(
    tmp_path: Path, include_draft: bool, now: Any
) -> None:
    cache = tmp_path / INDEX_NAME
    queue, done = data(*MIXED_QUEUE), data(*MIXED_DONE)
    parsed = read(cache, queue, done)  # parses, and keeps the index
    kept = read(cache, queue, done)
    assert not kept.parsed and parsed.parsed
    expected = select_runnable(
        parsed.queue, parsed.done, MIXED_WORKERS, now, max_attempts=3, include_draft=include_draft
    )
    for queues in (parsed, kept):
        chosen = queues.runnable(MIXED_WORKERS, now, max_attempts=3, include_draft=include_draft)
        assert chosen == expected  # the whole tasks, every field, built from the index's copy
        # ... and the same fields set: a task written back keeps only the keys its file had.
        assert [t.model_fields_set for t in chosen] == [t.model_fields_set for t in expected]
    later = ["RQ-0008"] if now > NOW else []  # its schedule came
    retried = ["RQ-0014"] if now > NOW else []  # its retry time came
    drafts = ["RQ-0004", "RQ-0005"] if include_draft else []
    # Doing first; RQ-0003 waits for RQ-0001; RQ-0012 runs, RQ-0015 used its attempts, RQ-0016 landed,
    # RQ-0018 is blocked.
    assert [t.id for t in expected] == [
        *("RQ-0002", "RQ-0001", "RQ-0006", "RQ-0007", *later, "RQ-0009", "RQ-0013", *retried, "RQ-0017"),
        *drafts,
    ]
    assert not kept.parsed  # selection needed no parse of the whole queue


def test_a_backlog_of_many_ready_tasks_is_built_from_one_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_KEPT_TASKS ready tasks the index keeps no copies (building thousands one by one costs
    more than one parse of the queue): a selection that chooses any parses the queue, once."""
    monkeypatch.setattr(QueueIndex, "MAX_KEPT_TASKS", 3)
    cache = tmp_path / INDEX_NAME
    queue, done = data(*MIXED_QUEUE), data(*MIXED_DONE)
    parsed = read(cache, queue, done)
    assert parsed.index is not None and all(r.text is None for r in parsed.index.ready)
    kept = read(cache, queue, done)
    assert not kept.parsed
    assert kept.runnable(MIXED_WORKERS, NOW + timedelta(days=400_000), max_attempts=3) == select_runnable(
        parsed.queue, parsed.done, MIXED_WORKERS, NOW + timedelta(days=400_000), max_attempts=3
    )
    assert kept.parsed
    # Nothing chosen, nothing built: a queue whose ready tasks all wait is not parsed.
    waiting = {t["id"]: worker(t["id"], Lifecycle.RUNNING) for t in MIXED_QUEUE}
    again = read(cache, queue, done)
    assert again.runnable(waiting, NOW, max_attempts=3) == []
    assert not again.parsed


def test_what_a_tick_asks_besides_selection_comes_from_the_index_alike(tmp_path: Path) -> None:
    cache = tmp_path / INDEX_NAME
    # A rejected task may share its id, in one file or across both: `status` is the queue's first copy.
    queue = data(*MIXED_QUEUE, task("RQ-0011", status="rejected"), task("RQ-0021"))
    done = data(*MIXED_DONE)
    parsed = read(cache, queue, done)
    kept = read(cache, queue, done)
    models = Queues(parsed.queue, parsed.done)  # no index at all: the answers as they always were
    for queues in (kept, parsed):
        assert queues.positions() == {t.id: n for n, t in enumerate(parsed.queue.tasks)}
        assert queues.statuses() == models.statuses()
        for task_id in ("RQ-0001", "RQ-0010", "RQ-0011", "RQ-0020", "RQ-0021", "RQ-0099"):
            found = models.find(task_id)
            assert queues.status(task_id) == (None if found is None else found.status)
        assert queues.scheduled_times() == [t.scheduled_at for t in parsed.queue.tasks if t.scheduled_at]
        assert queues.problems(QueueConfig()) == []
    assert not kept.parsed
    assert kept.find("RQ-0017") == parsed.find("RQ-0017")  # a whole task: the models, parsed now
    assert kept.parsed


def test_a_changed_queue_is_read_again(tmp_path: Path) -> None:
    cache = tmp_path / INDEX_NAME
    done = data()
    before = read(cache, data(task("RQ-0001", scheduled_start="2999-01-01T00:00:00Z")), done)
    assert before.runnable({}, NOW, max_attempts=3) == []
    after = read(cache, data(task("RQ-0001", scheduled_start="2999-01-01T00:00:00Z"), task("RQ-0002")), done)
    assert after.parsed  # another blob id: the index kept for the old one does not answer
    assert [t.id for t in after.runnable({}, NOW, max_attempts=3)] == ["RQ-0002"]
    assert not read(
        cache, data(task("RQ-0001", scheduled_start="2999-01-01T00:00:00Z"), task("RQ-0002")), done
    ).parsed


def test_a_changed_done_archive_is_read_again(tmp_path: Path) -> None:
    cache = tmp_path / INDEX_NAME
    queue = data(task("RQ-0002", depends_on=["RQ-0001"]))
    assert read(cache, queue, data(task("RQ-0001", status="done"))).runnable({}, NOW, max_attempts=3)
    # The same queue with its dependency no longer done: a stale index would still start RQ-0002.
    with pytest.raises(QueueError, match="names RQ-0001, which is in neither"):
        read(cache, queue, data())


def test_the_index_is_for_the_id_format_that_judged_the_files(tmp_path: Path) -> None:
    cache = tmp_path / INDEX_NAME
    queue, done = data(task("RQ-0001")), data()
    read(cache, queue, done)
    with pytest.raises(QueueError) as e:
        read(cache, queue, done, QueueConfig(id_prefix="TK", id_width=3))
    assert str(e.value) == f"{NAMES[0]}: task RQ-0001: id should look like TK-001 (3 digits)"
    # The tick's Queues answers problems from its index only for the config that judged them.
    assert read(cache, queue, done).problems(QueueConfig(id_width=5)) == [
        f"{NAMES[0]}: task RQ-0001: id should look like RQ-00001 (5 digits)"
    ]


def test_a_bad_queue_is_reported_as_before_and_nothing_is_kept(tmp_path: Path) -> None:
    cache = tmp_path / INDEX_NAME
    bad = data(task("RQ-0001"), task("RQ-0001"))
    with pytest.raises(QueueError) as e:
        read(cache, bad, data())
    assert str(e.value) == (
        f"{NAMES[0]}: task RQ-0001: the id appears twice (in {NAMES[0]}); give one of them a new id"
    )
    with pytest.raises(QueueError, match="not valid JSON"):
        read(cache, b'{"version": 1, "tasks": [', data())
    assert not cache.exists()


def test_a_dry_run_keeps_nothing(tmp_path: Path) -> None:
    cache = tmp_path / INDEX_NAME
    read(cache, data(task("RQ-0001")), data(), write=False)
    assert not cache.exists()


def damaged(text: bytes) -> list[bytes]:
    check, _, body = text.partition(b"\n")
    raw = json.loads(body)
    edited = json.dumps({**raw, "ready": []}).encode()  # the selection emptied by hand
    wrong_shape = json.dumps({**raw, "ready": [["x"]]}).encode()
    misplaced = json.dumps({**raw, "ready": [[5, *r[1:]] for r in raw["ready"]]}).encode()
    naive = json.dumps({**raw, "scheduled": ["2999-01-01T00:00:00"]}).encode()
    return [
        b"",
        b"garbage",
        text[: len(text) // 2],  # torn
        check + b"\n" + edited,  # edited without its checksum: ignored
        hashlib.sha256(b"[]").hexdigest().encode() + b"\n[]",
        *(hashlib.sha256(b).hexdigest().encode() + b"\n" + b for b in (wrong_shape, misplaced, naive)),
    ]


def test_a_damaged_or_edited_index_is_ignored_and_written_again(tmp_path: Path) -> None:
    cache = tmp_path / INDEX_NAME
    queue = data(task("RQ-0001"), task("RQ-0002", scheduled_start="2999-01-01T00:00:00Z"), task("RQ-0003"))
    done = data()
    read(cache, queue, done)
    good = cache.read_bytes()
    key = index_key(blob_id(queue), blob_id(done), QueueConfig())
    assert load_index(cache, key) is not None
    for bad in damaged(good):
        cache.write_bytes(bad)
        assert load_index(cache, key) is None, bad[:80]
        queues = read(cache, queue, done)
        assert queues.parsed
        assert [t.id for t in queues.runnable({}, NOW, max_attempts=3)] == ["RQ-0001", "RQ-0003"]
        assert cache.read_bytes() == good  # recomputed and kept again
    cache.unlink()
    cache.mkdir()  # not even a file: the index cannot be read or written, the tick goes on
    assert [t.id for t in read(cache, queue, done).runnable({}, NOW, max_attempts=3)] == [
        "RQ-0001",
        "RQ-0003",
    ]


def test_the_index_of_other_code_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / INDEX_NAME
    queue, done = data(task("RQ-0001")), data()
    read(cache, queue, done)
    monkeypatch.setattr("ralph.queuecache.INDEX_FORMAT", 2)  # what a change to the derivation bumps
    assert read(cache, queue, done).parsed


def test_blob_id_is_gits(tmp_path: Path) -> None:
    path = tmp_path / "queue.json"
    for content in (b"", data(task("RQ-0001"))):
        path.write_bytes(content)
        expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True).stdout
        assert blob_id(content) == expected.strip()
    assert blob_id(None) == "none"


def test_blob_id_is_gits_in_a_sha256_repository(tmp_path: Path) -> None:
    """The index a landing keeps is looked up by git's own ids: SHA-256 ones in such a repository."""
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "--object-format=sha256", str(repo))
    git(repo, "commit", "-q", "--allow-empty", "-m", "first")
    tip = git(repo, "rev-parse", "HEAD")
    assert len(tip) == 64
    for content in (b"", data(task("RQ-0001"))):
        (repo / "queue.json").write_bytes(content)
        assert blob_id(content, like=tip) == git(repo, "hash-object", "queue.json")


def test_a_landing_keeps_no_index_of_a_queue_over_the_size_limit(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read refuses a queue over MAX_QUEUE_BYTES; an index kept after a landing must not let later
    ticks take it."""
    monkeypatch.setattr("ralph.queuecache.MAX_QUEUE_BYTES", 100)
    queue, done = data(task("RQ-0001")), data()
    assert len(queue) > 100
    queues = read(project.control / "elsewhere.json", queue, done, write=False)
    head = git(project.control, "rev-parse", "HEAD")
    keep_landed(open_checkout(project.control), queue, done, queues, tip=head)
    assert not (project.control / ".ralph" / "cache" / "parallel" / INDEX_NAME).exists()
    monkeypatch.setattr("ralph.queuecache.MAX_QUEUE_BYTES", 10_000)
    keep_landed(open_checkout(project.control), queue, done, queues, tip=head)
    assert (project.control / ".ralph" / "cache" / "parallel" / INDEX_NAME).exists()


def test_an_index_round_trips(tmp_path: Path) -> None:
    parsed = read(tmp_path / INDEX_NAME, data(*MIXED_QUEUE), data(*MIXED_DONE))
    index = QueueIndex.of(parsed.queue, parsed.done, valid_for=("RQ", 4))
    save_index(tmp_path / "again.json", "k", index)
    assert load_index(tmp_path / "again.json", "k") == index
    assert load_index(tmp_path / "again.json", "another key") is None


# --- in the tick ------------------------------------------------------------------------------------


@pytest.fixture
def project(origin: Path, control: Path) -> Project:
    return make_project(origin, control)


def push_queue(project: Project, *tasks: dict[str, Any]) -> None:
    (project.control / ".ralph" / "queue.json").write_bytes(data(*tasks))
    project.commit_and_push("queue by hand")


def test_a_tick_keeps_the_index_and_follows_the_queue_on_the_base(project: Project) -> None:
    """The tick that reads a queue keeps its index; a push that changes the queue is seen by the next
    tick whatever the index says, and a damaged index costs only the parse."""
    cache = project.control / ".ralph" / "cache" / "parallel" / INDEX_NAME
    push_queue(project, task("RQ-0001", scheduled_start="2999-01-01T00:00:00Z"))
    assert not project.tick().actions
    assert cache.is_file()
    kept, inode = cache.read_bytes(), cache.stat().st_ino
    assert not project.tick().actions
    assert cache.stat().st_ino == inode  # the same queue: the index was read, not written again
    cache.write_bytes(b"{" + kept)  # damaged
    assert not project.tick().actions
    assert cache.read_bytes() == kept  # ignored, and kept again from the files
    push_queue(project, task("RQ-0001", scheduled_start="2999-01-01T00:00:00Z"), task("RQ-0002"))
    report = project.tick()
    assert [(a.task_id, a.action) for a in report.actions] == [("RQ-0002", "started_agent")]
    assert cache.read_bytes() != kept
    project.wait_for_jobs()


def test_a_bad_queue_on_the_base_fails_the_tick_in_one_line_though_an_index_was_kept(
    project: Project,
) -> None:
    push_queue(project, task("RQ-0001", scheduled_start="2999-01-01T00:00:00Z"))
    assert project.tick_process().returncode == 0
    cache = project.control / ".ralph" / "cache" / "parallel" / INDEX_NAME
    kept = cache.read_bytes()
    push_queue(project, task("RQ-0001"), task("RQ-0001"))
    done = project.tick_process()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"origin/{BASE}:.ralph/queue.json: task RQ-0001: the id appears twice" in done.stderr
    assert cache.read_bytes() == kept
    # The base was fetched (the bad queue is the one read), and the index kept is of the good one.
    assert git(project.control, "rev-parse", f"origin/{BASE}") == git(project.origin, "rev-parse", BASE)


def test_a_landing_keeps_the_index_of_the_files_it_pushed(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick that lands has the new queue and done files' models at hand: it keeps their index, the
    very one parsing the pushed files gives, and the next tick does not parse the queue again."""
    complete = {**copy.deepcopy(COMPLETE_TASK), "id": "RQ-0017", "depends_on": [], "blocks": []}
    del complete["duplicates"]  # (of a task this queue has not)
    push_queue(
        project,
        task("RQ-0001", description="scripted-agent: write a.txt a"),
        task("RQ-0002", depends_on=["RQ-0001"], scheduled_start="2999-01-01T00:00:00Z"),
        {**complete, "status": "todo", "scheduled_start": "2999-01-01T00:00:00Z"},
        task("RQ-0004", status="draft"),
    )
    project.run_until(all_landed(1))
    shown = [
        git(project.origin, "show", f"{BASE}:.ralph/{name}").encode() + b"\n"
        for name in ("queue.json", "done.json")
    ]
    assert [blob_id(b) for b in shown] == [
        git(project.origin, "rev-parse", f"{BASE}:.ralph/{name}") for name in ("queue.json", "done.json")
    ]
    config = QueueConfig()
    kept = load_index(
        project.control / ".ralph" / "cache" / "parallel" / INDEX_NAME,
        index_key(*(blob_id(b) for b in shown), config),
    )
    assert kept is not None
    assert kept == read(tmp_path / "fresh.json", *shown, write=False).index
    assert [r.id for r in kept.ready] == ["RQ-0002", "RQ-0017", "RQ-0004"]  # RQ-0001 is in the archive
    monkeypatch.setattr("ralph.queuecache.parse_queue_bytes", lambda *a: pytest.fail("the queue was parsed"))
    assert not project.tick().actions


def test_a_tick_whose_index_holds_reads_only_the_queue_files_blob_ids(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index is kept by the files' blob ids: a tick that finds it asks git for the ids alone, not
    for megabytes of queue it would not parse."""
    push_queue(project, *(task(f"RQ-{n:04d}", scheduled_start="2999-01-01T00:00:00Z") for n in range(1, 40)))
    assert not project.tick().actions  # keeps the index
    queue_id = git(project.control, "rev-parse", f"origin/{BASE}:.ralph/queue.json")
    asked: list[str] = []
    real_run = Git.run

    def run(self: Git, *args: str, **kwargs: Any) -> Any:
        if args[:2] == ("cat-file", "--batch"):
            asked.append(str(kwargs.get("input")))
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(Git, "run", run)
    assert not project.tick().actions
    assert not any(queue_id in given or ".ralph/queue.json" in given for given in asked), asked
    (project.control / ".ralph" / "cache" / "parallel" / INDEX_NAME).unlink()
    assert not project.tick().actions  # without the index the contents are read, and seen read here
    assert any(queue_id in given for given in asked), asked
