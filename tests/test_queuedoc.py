"""Byte-faithful queue files: a change rewrites only the tasks it touches, in the file's own layout.

The fixtures are written the way the Rust ralph writes its files (tests/rust_formats.py): a landing's
diff of the done archive must be exactly the moved task, the queue must lose exactly that task, and
both must still pass the Rust ralph's schema.
"""

from __future__ import annotations

import difflib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from rust_formats import NINE, NINE_LATER, WHOLE, rust_file, rust_task, schema_problems

from ralph.errors import QueueError
from ralph.queue import Priority, TaskStatus, parse_queue_file
from ralph.queuedoc import QueueEdit, TimeStyle, archive_task

NOW = datetime(2026, 11, 21, 10, 0, 5, 123456, tzinfo=UTC)
NOW_9 = "2026-11-21T10:00:05.123456000Z"
NOW_0 = "2026-11-21T10:00:05Z"


def changed_lines(before: bytes, after: bytes) -> tuple[list[str], list[str]]:
    """The lines a line diff removes and adds, as `git diff` would show them."""
    removed, added = [], []
    for line in difflib.ndiff(before.decode().splitlines(), after.decode().splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


def edit_of(queue: bytes | None, done: bytes | None = None) -> QueueEdit:
    return QueueEdit.parse(
        queue, done, queue_name=".ralph/queue.jsonc", done_name=".ralph/done.jsonc", now=NOW
    )


# --- a landing -------------------------------------------------------------------------------------


QUEUE = [
    rust_task("RQ-0101", status="doing"),
    rust_task("RQ-0102", priority="high", depends_on=["RQ-0001"]),
    rust_task("RQ-0103", created_at=WHOLE, updated_at=WHOLE, started_at=None),
]
DONE = [
    rust_task("RQ-0001", status="done", created_at=WHOLE, updated_at=WHOLE, completed_at=WHOLE),
    rust_task("RQ-0002", status="done", notes=["Unified the wait paths."]),
    rust_task("RQ-0003", status="rejected", custom_fields={}),
]


def test_a_landing_moves_exactly_one_task_and_writes_what_the_rust_ralph_would() -> None:
    queue, done = rust_file(*QUEUE), rust_file(*DONE)
    new_queue, new_done = archive_task(queue, done, "RQ-0102", NOW)

    moved = {**QUEUE[1], "status": "done", "updated_at": NOW_9}
    moved = rust_task("RQ-0102", **{**moved, "completed_at": NOW_9})
    # Byte for byte what serde_json would write for the same files: every other task untouched, the
    # moved one with the Rust ralph's own 9-digit times, no newline added at the end.
    assert new_queue == rust_file(QUEUE[0], QUEUE[2])
    assert new_done == rust_file(*DONE, moved)
    removed, added = changed_lines(done, new_done)
    assert removed == []  # nothing of the archive changes: the moved task is only added
    # The moved task, plus "}," for the task before it (its closing line is matched by the new one's).
    assert len(added) == len(json.dumps(moved, indent=2, ensure_ascii=False).splitlines())
    assert added[0] == "    },"
    removed, added = changed_lines(queue, new_queue)
    assert added == []
    assert len(removed) == len(json.dumps(QUEUE[1], indent=2).splitlines())
    assert schema_problems(new_queue) == schema_problems(new_done) == []


def test_a_task_written_with_whole_seconds_keeps_whole_seconds() -> None:
    new_queue, new_done = archive_task(rust_file(*QUEUE), rust_file(*DONE), "RQ-0103", NOW)
    archived = json.loads(new_done)["tasks"][-1]
    assert (archived["created_at"], archived["updated_at"], archived["completed_at"]) == (WHOLE, NOW_0, NOW_0)


def test_a_merge_train_lands_several_each_on_the_previous_output() -> None:
    queue, done = rust_file(*QUEUE), rust_file(*DONE)
    for task_id in ("RQ-0103", "RQ-0101"):
        queue, done = archive_task(queue, done, task_id, NOW)
    assert [t["id"] for t in json.loads(queue)["tasks"]] == ["RQ-0102"]
    assert [t["id"] for t in json.loads(done)["tasks"]] == [
        "RQ-0001",
        "RQ-0002",
        "RQ-0003",
        "RQ-0103",
        "RQ-0101",
    ]
    assert queue == rust_file(QUEUE[1])
    assert done.startswith(rust_file(*DONE)[: -len("\n  ]\n}")])


def test_a_task_already_archived_only_leaves_the_queue_and_a_missing_one_is_an_error() -> None:
    queue = rust_file(QUEUE[0], rust_task("RQ-0002"))
    new_queue, new_done = archive_task(queue, rust_file(*DONE), "RQ-0002", NOW)
    assert new_queue == rust_file(QUEUE[0])
    assert new_done == rust_file(*DONE)
    with pytest.raises(QueueError, match="RQ-0999 is in neither .ralph/queue.json nor .ralph/done.json"):
        archive_task(queue, rust_file(*DONE), "RQ-0999", NOW)


def test_follow_ups_go_where_new_tasks_go_after_a_leading_doing_task() -> None:
    edit = edit_of(rust_file(*QUEUE))
    followup = edit.new_task(_config(), title="Document the flag")
    new_queue, _ = archive_task(rust_file(*QUEUE), rust_file(*DONE), "RQ-0102", NOW, [followup])
    ids = [t["id"] for t in json.loads(new_queue)["tasks"]]
    assert ids == ["RQ-0101", followup.id, "RQ-0103"]


# --- comments, trailing commas, the dialect ---------------------------------------------------------

JSONC = """{
  // The queue. Hand-edited; keep the comments.
  "version": 1,
  "tasks": [
    /* first: the urgent one */
    {
      "id": "RQ-0001",
      "title": "Urgent",
      "created_at": "2026-04-23T15:22:36.396092000Z",
      "updated_at": "2026-04-23T15:22:36.396092000Z", // set by hand
      "tags": ["a", "b",],
    },
    {
      id: 'RQ-0002',
      title: 'Loose keys, single quotes',
      created_at: "2026-04-23T05:22:08Z",
      updated_at: "2026-04-23T05:22:08Z",
      scheduled_start: "2026-05-01T09:00:00+02:00",
      notes: [""],
      depends_on: ["RQ-0001 "],
      estimated_minutes: 0x1E,
    },
    {
      "id": "RQ-0003",
      "title": "Last",
      "created_at": "2026-04-23T05:22:08Z",
      "updated_at": "2026-04-23T05:22:08Z"
    }, // trailing comma after the last task
  ],
}
"""


def test_what_the_rust_ralph_accepts_is_read() -> None:
    """Loose keys, single quotes, hex, a non-UTC scheduled_start, `notes: [""]`, a trailing space in an
    id reference: all refused before, each of them stopping every tick of a real queue."""
    queue = parse_queue_file(JSONC.encode(), "queue.jsonc")
    loose = queue.tasks[1]
    assert loose.title == "Loose keys, single quotes"
    assert loose.scheduled_start == "2026-05-01T09:00:00+02:00"
    assert loose.scheduled_at == datetime(2026, 5, 1, 7, tzinfo=UTC)
    assert loose.notes == [""]
    assert loose.depends_on == ["RQ-0001"]
    assert loose.estimated_minutes == 30


def test_changing_one_task_leaves_every_other_line_comments_included() -> None:
    edit = edit_of(JSONC.encode())
    edit.finish("RQ-0001", TaskStatus.DONE)
    queue, done = edit.render()
    # The queue loses exactly the first task (the comment above it went with it); the others, loose
    # keys and comments and trailing commas included, are byte for byte as they were.
    first = JSONC.index("    /* first")
    second = JSONC.index("    {\n      id: 'RQ-0002'")
    assert queue.decode() == JSONC[:first] + JSONC[second:]
    assert parse_queue_file(queue, "queue.jsonc").tasks[0].id == "RQ-0002"
    archived = json.loads(done)["tasks"]
    assert archived[0]["tags"] == ["a", "b"] and archived[0]["status"] == "done"
    assert archived[0]["updated_at"] == NOW_9  # the task's own 9-digit form


def test_a_touched_task_is_normalised_and_only_its_changed_values_get_new_text() -> None:
    edit = edit_of(JSONC.encode())
    edit.update("RQ-0002", title="Renamed")
    queue, _ = edit.render()
    removed, added = changed_lines(JSONC.encode(), queue)
    # The touched task is rewritten in the file's layout (quoted keys); values that did not change
    # keep their text (the +02:00 offset, the "" note, the trailing space in the reference).
    assert '      "scheduled_start": "2026-05-01T09:00:00+02:00",' in added
    assert '      "title": "Renamed",' in added
    assert '      "updated_at": "2026-11-21T10:00:05Z",' in added  # its own whole-second form
    assert '      "depends_on": ["RQ-0001 "],' in added
    assert '      "estimated_minutes": 30' in added  # 0x1E, which is not JSON, written as JSON
    assert "      id: 'RQ-0002'," in removed
    block = JSONC[JSONC.index("    {\n      id:") : JSONC.index('    {\n      "id": "RQ-0003"')]
    assert set(removed) <= set(block.splitlines())
    assert JSONC[: JSONC.index("    {\n      id:")] in queue.decode()
    assert JSONC[JSONC.index('    {\n      "id": "RQ-0003"') :] in queue.decode()


def test_an_edit_of_one_value_changes_that_line_and_updated_at_only() -> None:
    before = rust_file(*QUEUE)
    edit = edit_of(before)
    edit.update("RQ-0102", priority=Priority.LOW)
    after, _ = edit.render()
    removed, added = changed_lines(before, after)
    assert sorted(removed) == sorted(['      "priority": "high",', f'      "updated_at": "{NINE_LATER}",'])
    assert sorted(added) == sorted(['      "priority": "low",', f'      "updated_at": "{NOW_9}",'])


# --- adding, removing, moving ------------------------------------------------------------------------


def test_a_new_task_at_the_top_adds_only_its_own_lines() -> None:
    before = rust_file(*QUEUE[1:])
    edit = edit_of(before, rust_file(*DONE))
    new = edit.new_task(_config(), title="Fresh")
    edit.add(new)
    after, done = edit.render()
    assert done == rust_file(*DONE)
    removed, added = changed_lines(before, after)
    assert removed == []
    assert added[:3] == ["    {", '      "id": "RQ-0104",', '      "status": "todo",']
    assert f'      "created_at": "{NOW_9}",' in added  # the file's own time form
    assert schema_problems(after) == []


def test_the_default_place_is_after_a_leading_doing_task() -> None:
    edit = edit_of(rust_file(*QUEUE))
    edit.add(edit.new_task(_config(), title="Fresh"))
    assert [t.id for t in edit.queue.tasks] == ["RQ-0101", "RQ-0104", "RQ-0102", "RQ-0103"]


def test_removing_the_last_task_takes_the_comma_before_it_and_the_only_one_leaves_brackets() -> None:
    edit = edit_of(rust_file(*QUEUE))
    edit.remove("RQ-0103")
    assert edit.render()[0] == rust_file(*QUEUE[:2])
    edit.remove("RQ-0101")
    edit.remove("RQ-0102")
    assert edit.render()[0] == rust_file()  # "tasks": [], as serde_json writes an empty list


def test_adding_to_an_empty_list_and_to_a_file_without_tasks_and_to_no_file() -> None:
    for before in (rust_file(), b'{"version": 1}', b'{\n  "version": 1\n}\n', None):
        edit = edit_of(before)
        edit.add(edit.new_task(_config(), title="First"))
        after, _ = edit.render()
        assert [t.id for t in parse_queue_file(after, "q").tasks] == ["RQ-0001"], after
        assert schema_problems(after) == []
    untouched = edit_of(b'{"version": 1}')
    assert untouched.changed() == (None, None)  # no change, no rewrite


def test_crlf_files_stay_crlf() -> None:
    before = rust_file(*QUEUE).replace(b"\n", b"\r\n")
    edit = edit_of(before)
    edit.add(edit.new_task(_config(), title="Windows"), at=3)
    after, _ = edit.render()
    assert b"\n" not in after.replace(b"\r\n", b"")
    assert after.startswith(before[: before.rindex(b"}\r\n  ]")])


def test_move_and_sort_keep_each_task_text() -> None:
    before = rust_file(*QUEUE)
    edit = edit_of(before)
    edit.move("RQ-0103", index=0)
    after, _ = edit.render()
    assert after == rust_file(QUEUE[2], QUEUE[0], QUEUE[1])
    edit = edit_of(before)
    assert edit.sort()
    # high first; the two medium ones keep their queue order.
    assert edit.render()[0] == rust_file(QUEUE[1], QUEUE[0], QUEUE[2])
    assert not edit_of(rust_file(QUEUE[1], QUEUE[0])).sort()


def test_time_styles() -> None:
    assert TimeStyle.of(NINE) == TimeStyle(9, "Z")
    assert TimeStyle.of(WHOLE) == TimeStyle(0, "Z")
    assert TimeStyle.of("2026-04-23T05:22:08.123+00:00") == TimeStyle(3, "+00:00")
    assert TimeStyle(3, "+00:00").format(NOW) == "2026-11-21T10:00:05.123+00:00"
    assert TimeStyle.of("yesterday") is None


def test_a_missing_file_stays_missing_unless_a_task_goes_in() -> None:
    edit = edit_of(rust_file(*QUEUE), None)
    edit.update("RQ-0102", title="Only the queue changes")
    queue, done = edit.changed()
    assert queue is not None and done is None
    edit.finish("RQ-0102", TaskStatus.REJECTED)
    assert edit.changed()[1] is not None


def _config() -> Any:
    from ralph.config import QueueConfig

    return QueueConfig()
