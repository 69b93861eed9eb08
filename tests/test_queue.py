"""The queue and done archive: Rust-ralph compatible round trips, refusal of bad input, and selection."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ralph.config import QueueConfig
from ralph.errors import QueueError
from ralph.paths import Paths
from ralph.queue import (
    MAX_QUEUE_BYTES,
    QueueFile,
    Task,
    TaskAgent,
    TaskStatus,
    find_cycle,
    find_problems,
    load_queue_file,
    next_id,
    parse_queue_file,
    render_queue_file,
    save_queue_file,
    select_runnable,
    why_not_runnable,
)
from ralph.queues import Queues, load_local_queues
from ralph.state import Job, JobKind, Lifecycle, Worker

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
STAMP = "2026-11-21T09:00:00Z"

# Every key the Rust ralph's Task knows, in its struct order, with a non-default value.
COMPLETE_TASK: dict[str, Any] = {
    "id": "RQ-0007",
    "status": "todo",
    "title": "Make the parser accept CRLF — and say so in the docs",
    "description": "Windows users hand-edit the queue.\nSecond line.",
    "priority": "high",
    "tags": ["parser", "windows"],
    "scope": ["ralph/queue.py"],
    "evidence": ["issue #12"],
    "plan": ["write a failing test", "fix it"],
    "notes": ["found by a user"],
    "request": "please support CRLF",
    "agent": {
        "runner": "codex",
        "model": "gpt-5.4",
        "model_effort": "high",
        "phases": 2,
        "iterations": 3,
        "followup_reasoning_effort": "low",
        "runner_cli": {"sandbox": "disabled", "verbosity": "verbose"},
        "phase_overrides": {"phase1": {"runner": "claude", "model": "opus", "reasoning_effort": "high"}},
    },
    "created_at": "2026-11-01T08:00:00Z",
    "updated_at": "2026-11-02T08:30:00Z",
    "completed_at": None,
    "started_at": "2026-11-02T08:00:00Z",
    "estimated_minutes": 45,
    "actual_minutes": 0,
    "scheduled_start": "2026-11-03T00:00:00Z",
    "depends_on": ["RQ-0001"],
    "blocks": ["RQ-0002"],
    "relates_to": ["RQ-0001", "RQ-0002"],
    "duplicates": "RQ-0003",
    "custom_fields": {"runner_used": "codex", "model_used": "gpt-5.4"},
    "parent_id": "RQ-0001",
}


def task(task_id: str, **fields: Any) -> dict[str, Any]:
    """The smallest valid task document, plus `fields`, keys in the order ralph writes them."""
    doc: dict[str, Any] = {
        "id": task_id,
        "title": f"task {task_id}",
        "created_at": STAMP,
        "updated_at": STAMP,
    }
    if fields.get("status") in ("done", "rejected"):
        doc["completed_at"] = STAMP
    doc.update(fields)
    order = list(Task.model_fields)  # an unknown key (a typo under test) goes last
    return dict(sorted(doc.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def done_task(task_id: str, **fields: Any) -> dict[str, Any]:
    return task(task_id, status="done", **fields)


def document(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "tasks": list(tasks)}


def ralph_bytes(doc: dict[str, Any]) -> bytes:
    """A document laid out exactly the way ralph writes one."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def qf(*tasks: dict[str, Any]) -> QueueFile:
    """A queue file parsed from JSON, as from disk (so only the keys given count as set)."""
    return parse_queue_file(json.dumps(document(*tasks)).encode(), "queue.json")


def complete_file() -> dict[str, Any]:
    return document(
        task("RQ-0001", status="done"),
        task("RQ-0002"),
        task("RQ-0003", status="rejected"),
        copy.deepcopy(COMPLETE_TASK),
    )


# --- round trip ----------------------------------------------------------------------------------


def test_complete_task_fixture_covers_every_model_field() -> None:
    """The round-trip fixture below exercises every key of Task and TaskAgent, so none is untested."""
    assert list(COMPLETE_TASK) == list(Task.model_fields)
    assert list(COMPLETE_TASK["agent"]) == list(TaskAgent.model_fields)


def test_complete_file_survives_render_and_parse() -> None:
    """load -> render -> load gives an equal model, with every Rust-ralph field intact."""
    first = parse_queue_file(ralph_bytes(complete_file()), "queue.json")
    again = parse_queue_file(render_queue_file(first), "queue.json")
    assert again == first
    rich = again.tasks[3]
    assert rich.agent is not None and rich.agent.phase_overrides == COMPLETE_TASK["agent"]["phase_overrides"]
    assert rich.scheduled_start == "2026-11-03T00:00:00Z"  # kept as written; parsed at selection
    assert rich.scheduled_at == datetime(2026, 11, 3, tzinfo=UTC)
    assert rich.custom_fields == {"runner_used": "codex", "model_used": "gpt-5.4"}


def test_file_in_ralph_layout_rerenders_byte_identically() -> None:
    """A file as ralph writes it (indent 2, UTF-8, Z times, struct order) re-renders byte for byte."""
    original = ralph_bytes(complete_file())
    assert render_queue_file(parse_queue_file(original, "queue.json")) == original


def test_absent_keys_stay_absent() -> None:
    """A round trip adds no defaults: a minimal task is written back with only the keys it had."""
    minimal = document(task("RQ-0001"), task("RQ-0002", agent={"runner": "claude"}))
    rendered = json.loads(render_queue_file(parse_queue_file(ralph_bytes(minimal), "queue.json")))
    assert rendered == minimal
    assert set(rendered["tasks"][0]) == {"id", "title", "created_at", "updated_at"}
    assert rendered["tasks"][1]["agent"] == {"runner": "claude"}


def test_explicit_null_and_empty_values_are_kept() -> None:
    """A key set to null or [] in the file is kept as written, not dropped as a default."""
    doc = document(task("RQ-0001", completed_at=None, tags=[], custom_fields={}))
    assert json.loads(render_queue_file(qf(*doc["tasks"]))) == doc


def test_archiving_by_assignment_writes_the_new_keys() -> None:
    """Moving a task to done in code (status, completed_at) writes those keys, though the file lacked them."""
    queue = qf(task("RQ-0001"))
    archived = queue.tasks[0]
    archived.status = TaskStatus.DONE
    archived.completed_at = NOW
    rendered = json.loads(render_queue_file(QueueFile(version=1, tasks=[archived])))
    assert rendered["tasks"][0] == task("RQ-0001", status="done", completed_at="2026-11-21T10:00:00Z")


def test_save_then_load_from_disk(tmp_path: Path) -> None:
    """save_queue_file writes what load_queue_file reads, and leaves no temp file behind."""
    path = tmp_path / "queue.json"
    queue = parse_queue_file(ralph_bytes(complete_file()), "queue.json")
    save_queue_file(path, queue)
    assert load_queue_file(path) == queue
    assert path.read_bytes() == ralph_bytes(complete_file())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.json"]


def test_missing_file_is_an_empty_queue(tmp_path: Path) -> None:
    assert load_queue_file(tmp_path / "queue.json") == QueueFile(version=1, tasks=[])


def test_custom_fields_numbers_and_bools_become_strings() -> None:
    """The Rust ralph coerces scalar custom_fields to strings; a file it wrote must load the same way."""
    queue = qf(task("RQ-0001", custom_fields={"n": 5, "ratio": 1.5, "ok": True, "no": False, "s": "x"}))
    assert queue.tasks[0].custom_fields == {"n": "5", "ratio": "1.5", "ok": "true", "no": "false", "s": "x"}
    assert json.loads(render_queue_file(queue))["tasks"][0]["custom_fields"]["ok"] == "true"


JSONC = b"""// the Rust ralph's queue, hand edited
{
  "version": 1, /* always 1 */
  "tasks": [
    {
      "id": "RQ-0001",
      "title": "keep // and /* inside strings */ as they are",
      "description": "a \\"quoted\\" // not a comment, http://example.com",
      "created_at": "2026-11-21T09:00:00Z", // trailing comment
      "updated_at": "2026-11-21T09:00:00Z",
      "tags": ["a", "b",],
    },
  ],
}
"""


def test_jsonc_comments_and_trailing_commas_load() -> None:
    """Comments and trailing commas are tolerated; comment markers inside strings are text."""
    queue = parse_queue_file(JSONC, "queue.jsonc")
    only = queue.tasks[0]
    assert only.title == "keep // and /* inside strings */ as they are"
    assert only.description == 'a "quoted" // not a comment, http://example.com'
    assert only.tags == ["a", "b"]


def test_jsonc_is_rewritten_as_plain_json() -> None:
    """Saving a .jsonc queue drops its comments and trailing commas, as the Rust ralph does."""
    rendered = render_queue_file(parse_queue_file(JSONC, "queue.jsonc"))
    expected = task(
        "RQ-0001",
        title="keep // and /* inside strings */ as they are",
        description='a "quoted" // not a comment, http://example.com',
        tags=["a", "b"],
    )
    assert rendered == ralph_bytes(document(expected))


def test_jsonc_syntax_error_reports_original_line(tmp_path: Path) -> None:
    """A syntax error below a block comment is reported at its line in the file as written."""
    path = tmp_path / "queue.jsonc"
    path.write_bytes(b'/* one\ntwo\nthree */\n{"version": 1,\n "tasks": [}\n')
    with pytest.raises(QueueError, match=r"not valid JSON: line 5 column"):
        load_queue_file(path)


def make_ralph_dir(root: Path, *names: str) -> Path:
    ralph = root / ".ralph"
    ralph.mkdir()
    for name in names:
        (ralph / name).write_bytes(ralph_bytes(document(task("RQ-0001"))))
    return ralph


def test_queue_jsonc_is_used_when_it_is_the_only_queue(tmp_path: Path) -> None:
    make_ralph_dir(tmp_path, "queue.jsonc")
    paths = Paths.for_root(tmp_path)
    assert paths.queue_file() == tmp_path / ".ralph" / "queue.jsonc"
    assert paths.done_file() == tmp_path / ".ralph" / "done.json"
    queues = load_local_queues(paths)
    assert queues.queue_name == ".ralph/queue.jsonc"
    assert [t.id for t in queues.queue.tasks] == ["RQ-0001"]


def test_plain_json_is_the_default(tmp_path: Path) -> None:
    make_ralph_dir(tmp_path)
    assert Paths.for_root(tmp_path).queue_file() == tmp_path / ".ralph" / "queue.json"


def test_both_queue_json_and_jsonc_is_an_error(tmp_path: Path) -> None:
    """Two candidate queues are ambiguous; refusing is safer than picking one and ignoring the other."""
    make_ralph_dir(tmp_path, "queue.json", "queue.jsonc")
    with pytest.raises(QueueError) as caught:
        Paths.for_root(tmp_path).queue_file()
    message = str(caught.value)
    assert "queue.json and" in message and "queue.jsonc exist" in message and "keep one" in message


# --- bad input -----------------------------------------------------------------------------------

# (queue.json bytes or document, done.json bytes or document, fragments the message must contain)
Raw = bytes | dict[str, Any]
EMPTY = document()

BAD_INPUTS: dict[str, tuple[Raw, Raw, list[str]]] = {
    "truncated JSON": (
        b'{\n  "version": 1,\n  "tasks": [\n    {"id": "RQ-0001", "title": ',
        EMPTY,
        ["queue.json: not valid JSON: line 4 column", "fix the syntax"],
    ),
    "priority is a number": (
        document(task("RQ-0001", priority=3)),
        EMPTY,
        ["queue.json: task 'RQ-0001' (tasks[0]).priority:", "'critical', 'high', 'medium' or 'low'", "got 3"],
    ),
    "depends_on is a string": (
        document(task("RQ-0001"), task("RQ-0002", depends_on="RQ-0001")),
        EMPTY,
        ["queue.json: task 'RQ-0002' (tasks[1]).depends_on:", "valid array", "got 'RQ-0001'"],
    ),
    "title is null": (
        document(task("RQ-0001", title=None)),
        EMPTY,
        ["queue.json: task 'RQ-0001' (tasks[0]).title:", "valid string", "got None"],
    ),
    "estimated_minutes is a string": (
        document(task("RQ-0001", estimated_minutes="5")),
        EMPTY,
        ["(tasks[0]).estimated_minutes:", "valid integer", "got '5'"],
    ),
    "estimated_minutes is a bool": (
        document(task("RQ-0001", estimated_minutes=True)),
        EMPTY,
        ["(tasks[0]).estimated_minutes:", "valid integer", "got True"],
    ),
    "typo in a key": (
        document(task("RQ-0001", stauts="todo")),
        EMPTY,
        ["queue.json: task 'RQ-0001' (tasks[0]).stauts: unknown key (a typo?)"],
    ),
    "typo in a nested key": (
        document(task("RQ-0001", agent={"runer": "codex"})),
        EMPTY,
        ["(tasks[0]).agent.runer: unknown key (a typo?)"],
    ),
    "missing title": (
        document({"id": "RQ-0001", "created_at": STAMP, "updated_at": STAMP}),
        EMPTY,
        ["queue.json: task 'RQ-0001' (tasks[0]).title: Field required"],
    ),
    "empty title": (
        document(task("RQ-0001", title="")),
        EMPTY,
        ["(tasks[0]).title:", "at least 1 character"],
    ),
    "version 2": ({"version": 2, "tasks": []}, EMPTY, ["queue.json: version: Input should be 1", "got 2"]),
    "version true": ({"version": True, "tasks": []}, EMPTY, ["queue.json: version:", "got True"]),
    "version 1.0": (b'{"version": 1.0, "tasks": []}', EMPTY, ["queue.json: version:", "got 1.0"]),
    "missing version": ({"tasks": []}, EMPTY, ["queue.json: version: Field required"]),
    "not an object": (b"[]", EMPTY, ["queue.json: (top level): Input should be an object"]),
    "NaN in a free-form object": (
        ralph_bytes(document(task("RQ-0001", agent={"runner_cli": {"x": 1}}))).replace(
            b'"x": 1', b'"x": NaN'
        ),
        EMPTY,
        ["queue.json: NaN is not a finite number"],
    ),
    "number too large for a float": (
        ralph_bytes(document(task("RQ-0001", agent={"runner_cli": {"x": 1}}))).replace(
            b'"x": 1', b'"x": 1e999'
        ),
        EMPTY,
        ["queue.json: 1e999 is not a finite number"],
    ),
    "non-UTC timestamp": (
        document(task("RQ-0001", created_at="2026-11-21T09:00:00+02:00")),
        EMPTY,
        ["(tasks[0]).created_at:", "must be UTC", "+02:00"],
    ),
    "naive timestamp": (
        document(task("RQ-0001", updated_at="2026-11-21T09:00:00")),
        EMPTY,
        ["(tasks[0]).updated_at:", "timezone", "got '2026-11-21T09:00:00'"],
    ),
    "NUL bytes in the file": (
        ralph_bytes(document(task("RQ-0001"))).replace(b'"title"', b'"ti\0tle"'),
        EMPTY,
        ["queue.json: contains NUL bytes"],
    ),
    "not UTF-8": (
        ralph_bytes(document(task("RQ-0001"))).replace(b"task RQ-0001", b"caf\xe9"),
        EMPTY,
        ["queue.json: not UTF-8 (byte ", "save it as UTF-8"],
    ),
    "NUL inside the title": (
        document(task("RQ-0001", title="a\0b")),
        EMPTY,
        ["queue.json: task 'RQ-0001' (tasks[0]).title:", "NUL character"],
    ),
    "NUL inside a note": (
        document(task("RQ-0001", notes=["ok", "x\0y"])),
        EMPTY,
        ["(tasks[0]).notes", "NUL character"],
    ),
    "path-like id ../x": (document(task("../x")), EMPTY, ["task '../x' (tasks[0]).id:", "path separator"]),
    "path-like id RQ-1/..": (
        document(task("RQ-1/..")),
        EMPTY,
        ["(tasks[0]).id:", "'RQ-1/..'", "not allowed"],
    ),
    "id -rf": (document(task("-rf")), EMPTY, ["(tasks[0]).id:", "'-rf'", "read as an option"]),
    "id with NUL": (document(task("a\0b")), EMPTY, ["(tasks[0]).id:", "'a\\x00b'", "NUL byte"]),
    "id with newline": (
        document(task("RQ-\n1")),
        EMPTY,
        ["(tasks[0]).id:", "'RQ-\\n1'", "control character"],
    ),
    "path-like dependency": (
        document(task("RQ-0001", depends_on=["RQ-0002", "../RQ-0002"]), task("RQ-0002")),
        EMPTY,
        ["task 'RQ-0001' (tasks[0]).depends_on[1]:", "'../RQ-0002'", "path separator"],
    ),
    "JSON nested too deeply": (
        b'{"version": 1, "tasks": ' + b"[" * 100_000,
        EMPTY,
        ["queue.json: not valid JSON: line 1 column", "nested more than 128 levels deep"],
    ),
    "deep nesting inside a task": (
        b'{"version": 1, "tasks": [{"id": "RQ-0001", "agent": {"runner_cli": '
        + b"[" * 300
        + b"]" * 300
        + b"}}]}",
        EMPTY,
        ["queue.json: not valid JSON: nested too deeply"],
    ),
    "done.json does not parse": (EMPTY, b'{"version": 1, "tasks": [', ["done.json: not valid JSON: line 1"]),
    # Semantic problems: the files parse but do not make sense together.
    "duplicate id in queue": (
        document(task("RQ-0001"), task("RQ-0001", title="again")),
        EMPTY,
        [".ralph/queue.json: task RQ-0001: the id appears twice (in .ralph/queue.json)"],
    ),
    "id in queue and done": (
        document(task("RQ-0001")),
        document(done_task("RQ-0001")),
        ["task RQ-0001: the id appears twice (in .ralph/queue.json and .ralph/done.json)"],
    ),
    "id twice in done": (
        EMPTY,
        document(task("RQ-0001", status="done"), task("RQ-0001", status="done")),
        [".ralph/done.json: task RQ-0001: the id appears twice (in .ralph/done.json)"],
    ),
    "two-task cycle": (
        document(task("RQ-0001", depends_on=["RQ-0002"]), task("RQ-0002", depends_on=["RQ-0001"])),
        EMPTY,
        [".ralph/queue.json: dependency cycle: RQ-0001 -> RQ-0002 -> RQ-0001"],
    ),
    "three-task cycle": (
        document(
            task("RQ-0001", depends_on=["RQ-0003"]),
            task("RQ-0002", depends_on=["RQ-0001"]),
            task("RQ-0003", depends_on=["RQ-0002"]),
        ),
        EMPTY,
        [".ralph/queue.json: dependency cycle: RQ-0001 -> RQ-0003 -> RQ-0002 -> RQ-0001"],
    ),
    "cycle through blocks": (
        # RQ-0001 blocks RQ-0002 means RQ-0002 waits for RQ-0001, which waits for RQ-0002.
        document(task("RQ-0001", blocks=["RQ-0002"], depends_on=["RQ-0002"]), task("RQ-0002")),
        EMPTY,
        ["dependency cycle: RQ-0001 -> RQ-0002 -> RQ-0001"],
    ),
    "cycle of blocks only": (
        document(task("RQ-0001", blocks=["RQ-0002"]), task("RQ-0002", blocks=["RQ-0001"])),
        EMPTY,
        ["dependency cycle: RQ-0001 -> RQ-0002 -> RQ-0001"],
    ),
    "cycle through a done task": (
        document(task("RQ-0002", depends_on=["RQ-0001"])),
        document(done_task("RQ-0001", depends_on=["RQ-0002"])),
        [".ralph/queue.json and .ralph/done.json: dependency cycle: RQ-0002 -> RQ-0001 -> RQ-0002"],
    ),
    "self dependency": (
        document(task("RQ-0001", depends_on=["RQ-0001"])),
        EMPTY,
        [".ralph/queue.json: task RQ-0001: depends_on names the task itself"],
    ),
    "self block": (
        document(task("RQ-0001", blocks=["RQ-0001"])),
        EMPTY,
        [".ralph/queue.json: task RQ-0001: blocks names the task itself"],
    ),
    "unknown dependency": (
        document(task("RQ-0001", depends_on=["RQ-0009"])),
        EMPTY,
        [
            "task RQ-0001: depends_on names RQ-0009, which is in neither .ralph/queue.json "
            "nor .ralph/done.json"
        ],
    ),
    "done archive holds a todo task": (
        EMPTY,
        document(task("RQ-0001")),
        [".ralph/done.json: task RQ-0001: status todo does not belong in the done archive"],
    ),
    "done task without completed_at": (
        EMPTY,
        document(task("RQ-0001", status="done", completed_at=None)),
        [".ralph/done.json: task RQ-0001: status done needs completed_at"],
    ),
    "rejected task without completed_at": (
        document(task("RQ-0001", status="rejected", completed_at=None)),
        EMPTY,
        [".ralph/queue.json: task RQ-0001: status rejected needs completed_at"],
    ),
    "too few digits": (
        document(task("RQ-12")),
        EMPTY,
        ["task RQ-12: id should look like RQ-0001 (4 digits)"],
    ),
    "wrong prefix": (document(task("XX-0001")), EMPTY, ["task XX-0001: id should look like RQ-0001"]),
}


def write_pair(root: Path, queue: Raw, done: Raw) -> dict[Path, bytes]:
    ralph = root / ".ralph"
    ralph.mkdir()
    written = {}
    for name, content in (("queue.json", queue), ("done.json", done)):
        data = content if isinstance(content, bytes) else ralph_bytes(content)
        (ralph / name).write_bytes(data)
        written[ralph / name] = data
    return written


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_one_clear_line(tmp_path: Path, case: str) -> None:
    """Each bad queue/done pair raises QueueError naming file, task and problem; neither file changes."""
    queue, done, fragments = BAD_INPUTS[case]
    written = write_pair(tmp_path, queue, done)
    with pytest.raises(QueueError) as caught:
        load_local_queues(Paths.for_root(tmp_path)).validate(QueueConfig())
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message
    assert "Value error," not in message  # pydantic's prefix adds nothing for a person
    for path, data in written.items():
        assert path.read_bytes() == data


def test_id_in_queue_and_done_is_allowed_when_one_is_rejected() -> None:
    """A rejected task's id may be reused, in either direction, without a duplicate-id complaint."""
    assert find_problems(qf(task("RQ-0001")), qf(task("RQ-0001", status="rejected"))) == []
    assert find_problems(qf(task("RQ-0001", status="rejected")), qf(done_task("RQ-0001"))) == []


def test_a_rejected_task_may_share_its_id_within_one_file_too() -> None:
    """As in the Rust ralph, whose duplicate check skips rejected tasks in each file: a Rust-made queue
    that holds a rejected twin must load here too (it was once refused, stopping every tick)."""
    assert (
        find_problems(qf(task("RQ-0001", status="rejected"), task("RQ-0001", status="rejected")), qf()) == []
    )
    assert find_problems(qf(), qf(done_task("RQ-0001"), task("RQ-0001", status="rejected"))) == []
    assert find_problems(qf(task("RQ-0001"), task("RQ-0001")), qf()) == [
        "queue.json: task RQ-0001: the id appears twice (in queue.json); give one of them a new id"
    ]


def test_valid_pair_has_no_problems() -> None:
    queue = qf(task("RQ-0003", depends_on=["RQ-0001", "RQ-0002"]), task("RQ-0004", blocks=["RQ-0003"]))
    done = qf(done_task("RQ-0001"), task("RQ-0002", status="rejected"))
    assert find_problems(queue, done) == []
    assert Queues(queue, done).problems(QueueConfig()) == []
    Queues(queue, done).validate(QueueConfig())  # raises QueueError on a problem
    # Without its archive the same queue names missing dependencies, and validate refuses it.
    with pytest.raises(
        QueueError, match=r"RQ-0003: depends_on names RQ-0001, which is in neither .* \(and 1 more"
    ):
        Queues(queue, qf()).validate(QueueConfig())


def test_custom_prefix_and_width_are_checked() -> None:
    config = QueueConfig(id_prefix="TK", id_width=3)
    assert Queues(qf(task("TK-001"), task("tk-002")), qf()).problems(config) == []
    assert Queues(qf(task("RQ-0001")), qf()).problems(config) == [
        "queue.json: task RQ-0001: id should look like TK-001 (3 digits)"
    ]


def test_validate_raises_the_first_problem_and_counts_the_rest() -> None:
    queue = qf(task("RQ-1"), task("RQ-2"), task("RQ-3", depends_on=["RQ-0009"]))
    problems = find_problems(queue, qf())
    assert len(problems) == 4
    with pytest.raises(QueueError) as caught:
        Queues(queue, qf()).validate(QueueConfig())
    assert str(caught.value) == f"{problems[0]} (and 3 more; `ralph queue validate` lists them)"


def test_all_problems_are_listed() -> None:
    """find_problems reports everything at once, so one `ralph queue validate` shows all that is wrong."""
    queue = qf(task("RQ-0001", depends_on=["RQ-0001"]), task("RQ-0002", status="done", completed_at=None))
    done = qf(task("RQ-0003"))
    assert find_problems(queue, done) == [
        "queue.json: task RQ-0002: status done needs completed_at",
        "done.json: task RQ-0003: status todo does not belong in the done archive",
        "queue.json: task RQ-0001: depends_on names the task itself",
    ]


def test_oversized_queue_is_refused_before_parsing(tmp_path: Path) -> None:
    """A file over the limit is refused from its size alone (a sparse file: nothing is read or parsed)."""
    path = tmp_path / "queue.json"
    with open(path, "wb") as f:
        f.truncate(MAX_QUEUE_BYTES + 1)  # sparse; all NULs, so parsing it would give a different error
    with pytest.raises(QueueError) as caught:
        load_queue_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: 33,554,433 bytes is over the 33,554,432-byte (32 MiB) limit")
    assert "done archive" in message
    assert path.stat().st_size == MAX_QUEUE_BYTES + 1


def test_queue_at_the_limit_is_read(tmp_path: Path) -> None:
    """The limit is inclusive: exactly MAX_QUEUE_BYTES is parsed (and here, valid JSON padded with spaces)."""
    path = tmp_path / "queue.json"
    body = b'{"version": 1, "tasks": []}'
    path.write_bytes(body + b" " * (MAX_QUEUE_BYTES - len(body)))
    assert load_queue_file(path) == QueueFile(version=1, tasks=[])


def test_oversized_blob_is_refused_too() -> None:
    """Bytes read from a git blob (tracked mode) get the same size limit as a file on disk."""
    data = b'{"version": 1, "tasks": []}' + b" " * MAX_QUEUE_BYTES
    with pytest.raises(QueueError, match=r"^origin/main:.ralph/queue.json: 33,554,459 bytes is over"):
        parse_queue_file(data, "origin/main:.ralph/queue.json")


def test_unreadable_queue_is_a_queue_error(tmp_path: Path) -> None:
    (tmp_path / "queue.json").mkdir()
    with pytest.raises(QueueError, match=r"queue.json: cannot read: Is a directory"):
        load_queue_file(tmp_path / "queue.json")


# --- next_id and cycles --------------------------------------------------------------------------


def test_next_id_of_nothing_is_the_first() -> None:
    assert next_id(qf(), qf()) == "RQ-0001"


def test_next_id_counts_queue_and_done_including_rejected() -> None:
    """A rejected id is never handed out again, wherever the highest number lives."""
    assert next_id(qf(task("RQ-0003"), task("RQ-0001")), qf(done_task("RQ-0002"))) == "RQ-0004"
    assert next_id(qf(task("RQ-0003")), qf(task("RQ-0010", status="rejected"))) == "RQ-0011"
    assert next_id(qf(task("RQ-0005", status="rejected")), qf()) == "RQ-0006"


def test_next_id_with_custom_prefix_and_width() -> None:
    assert next_id(qf(task("TK-041"), task("RQ-0999")), qf(), prefix="TK", width=3) == "TK-042"
    assert next_id(qf(task("tk-041")), qf(), prefix="TK", width=3) == "TK-042"
    assert next_id(qf(), qf(), prefix="JOB", width=6) == "JOB-000001"


def test_next_id_grows_past_the_width() -> None:
    assert next_id(qf(task("RQ-9999")), qf()) == "RQ-10000"


def chain(n: int, *, closed: bool) -> list[Task]:
    """T1 <- T2 <- ... <- Tn (each depends on the one before); closed: T1 depends on Tn."""
    ids = [f"RQ-{i:05d}" for i in range(1, n + 1)]
    tasks = [Task.model_validate_json(json.dumps(task(ids[0], depends_on=[ids[-1]] if closed else [])))]
    tasks += [
        Task.model_validate_json(json.dumps(task(ids[i], depends_on=[ids[i - 1]]))) for i in range(1, n)
    ]
    return tasks


def test_find_cycle_on_a_long_chain_does_not_recurse() -> None:
    """10,000 tasks in a line: no cycle, and no RecursionError."""
    assert find_cycle(chain(10_000, closed=False)) is None


def test_find_cycle_on_a_long_closed_chain_returns_the_whole_ring() -> None:
    tasks = chain(10_000, closed=True)
    cycle = find_cycle(tasks)
    assert cycle is not None
    assert len(cycle) == 10_001 and cycle[0] == cycle[-1]
    assert set(cycle) == {t.id for t in tasks}


def test_find_cycle_ignores_dangling_references() -> None:
    """An unknown dependency is its own problem, not a cycle and not a crash."""
    assert find_cycle(qf(task("RQ-0001", depends_on=["RQ-0009"])).tasks) is None


# --- selection (DESIGN §4.3) ---------------------------------------------------------------------


def worker(task_id: str, lifecycle: Lifecycle, **fields: Any) -> Worker:
    """A real Worker record, with a job when the lifecycle has one and completed_at when it is terminal."""
    job = None
    if lifecycle in Lifecycle.active():
        job = Job(
            kind=JobKind.AGENT,
            pid=4242,
            pid_start_ticks=183722,
            boot_id="boot",
            started_at=NOW - timedelta(minutes=5),
            deadline=NOW + timedelta(hours=1),
            log_path="/tmp/agent.log",
            result_path="/tmp/agent.result.json",
        )
    if lifecycle is Lifecycle.FAILED:
        # A failure the tick recorded carries its retry time; one without is a person's stop (cancel).
        fields.setdefault("next_attempt_at", NOW - timedelta(minutes=1))
    return Worker(
        task_id=task_id,
        lifecycle=lifecycle,
        workspace_path=f"/ws/{task_id}",
        started_at=NOW - timedelta(hours=1),
        updated_at=NOW - timedelta(minutes=1),
        completed_at=NOW - timedelta(minutes=1) if lifecycle in Lifecycle.terminal() else None,
        job=job,
        **fields,
    )


def runnable(
    queue: QueueFile, done: QueueFile | None = None, workers: Sequence[Worker] = (), max_attempts: int = 3
) -> list[str]:
    chosen = select_runnable(
        queue, done or qf(), {w.task_id: w for w in workers}, NOW, max_attempts=max_attempts
    )
    return [t.id for t in chosen]


def reason(
    queue: QueueFile, task_id: str, *, done: QueueFile | None = None, workers: Sequence[Worker] = ()
) -> str | None:
    queues = Queues(queue, done or qf())
    target = queues.find(task_id)
    assert target is not None
    return why_not_runnable(
        target, statuses=queues.statuses(), workers={w.task_id: w for w in workers}, now=NOW, max_attempts=3
    )


def test_queue_order_wins_over_priority_and_id() -> None:
    """Selection walks the file top to bottom; priority and id order never reorder it."""
    queue = qf(
        task("RQ-0009", priority="low"),
        task("RQ-0001", priority="critical"),
        task("RQ-0005", priority="medium"),
        task("RQ-0002", priority="high"),
    )
    assert runnable(queue) == ["RQ-0009", "RQ-0001", "RQ-0005", "RQ-0002"]


@pytest.mark.parametrize("status", ["done", "rejected"])
def test_finished_tasks_are_never_selected(status: str) -> None:
    queue = qf(task("RQ-0001", status=status), task("RQ-0002"))
    assert runnable(queue) == ["RQ-0002"]
    assert reason(queue, "RQ-0001") == f"status is {status}"


def test_a_draft_is_selected_only_with_include_draft_and_after_todo_tasks() -> None:
    queue = qf(task("RQ-0001", status="draft"), task("RQ-0002"))
    assert runnable(queue) == ["RQ-0002"]
    assert reason(queue, "RQ-0001") == "status is draft (`ralph run --include-draft` runs drafts)"
    chosen = select_runnable(queue, qf(), {}, NOW, max_attempts=3, include_draft=True)
    assert [t.id for t in chosen] == ["RQ-0002", "RQ-0001"]


def test_doing_tasks_are_resumed_first_without_waiting_again() -> None:
    """The Rust ralph resumes a `doing` task (one a run started and did not finish) before any todo
    task, as it is: its dependencies and schedule were met when it started. It was never selected here."""
    queue = qf(
        task("RQ-0001"),
        task("RQ-0002", status="doing", depends_on=["RQ-0003"], scheduled_start="2999-01-01T00:00:00Z"),
        task("RQ-0003"),
        task("RQ-0004", status="doing"),
    )
    assert runnable(queue) == ["RQ-0002", "RQ-0004", "RQ-0001", "RQ-0003"]
    # A worker on it still counts: a doing task in flight is not started twice.
    assert runnable(queue, workers=[worker("RQ-0002", Lifecycle.RUNNING)]) == [
        "RQ-0004",
        "RQ-0001",
        "RQ-0003",
    ]


def test_only_selects_one_task_out_of_order_if_it_may_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    queue = qf(
        task("RQ-0001"),
        task("RQ-0002"),
        task("RQ-0003", depends_on=["RQ-0001"]),
        task("RQ-0004", status="draft"),
    )

    def only(task_id: str, **options: Any) -> list[str]:
        chosen = select_runnable(queue, qf(), {}, NOW, max_attempts=3, only=task_id, **options)
        return [t.id for t in chosen]

    assert only("RQ-0002") == ["RQ-0002"]
    assert only("RQ-0003") == []
    assert "--only RQ-0003: not starting it: waits for RQ-0001 (todo)" in caplog.text
    assert only("RQ-0004") == []
    assert only("RQ-0004", include_draft=True) == ["RQ-0004"]
    assert only("RQ-0009") == []
    assert "--only RQ-0009: it is not in the queue" in caplog.text


@pytest.mark.parametrize("status", ["done", "rejected"])
@pytest.mark.parametrize("where", ["queue", "done"])
def test_dependency_met_when_terminal_in_either_file(status: str, where: str) -> None:
    dep = task("RQ-0001", status=status)
    queue = qf(task("RQ-0002", depends_on=["RQ-0001"]), *([dep] if where == "queue" else []))
    done = qf(*([dep] if where == "done" else []))
    assert runnable(queue, done) == ["RQ-0002"]


@pytest.mark.parametrize("status", ["todo", "doing", "draft"])
def test_dependency_unmet_while_not_terminal(status: str) -> None:
    queue = qf(task("RQ-0002", depends_on=["RQ-0001"]), task("RQ-0001", status=status))
    assert "RQ-0002" not in runnable(queue)
    assert reason(queue, "RQ-0002") == f"waits for RQ-0001 ({status})"


def test_missing_dependency_blocks() -> None:
    queue = qf(task("RQ-0002", depends_on=["RQ-0001", "RQ-0003"]), task("RQ-0003", status="done"))
    assert runnable(queue) == []
    assert reason(queue, "RQ-0002") == "waits for RQ-0001 (missing)"


def test_all_unmet_dependencies_are_named() -> None:
    queue = qf(task("RQ-0003", depends_on=["RQ-0001", "RQ-0002"]), task("RQ-0002", status="doing"))
    assert reason(queue, "RQ-0003") == "waits for RQ-0001 (missing), RQ-0002 (doing)"


def test_blocks_is_not_enforced_at_selection() -> None:
    """Like the Rust ralph, `blocks` is checked for cycles only; the blocked task may still start."""
    queue = qf(task("RQ-0001", blocks=["RQ-0002"]), task("RQ-0002"))
    assert runnable(queue) == ["RQ-0001", "RQ-0002"]


def test_future_scheduled_start_blocks_and_past_allows() -> None:
    queue = qf(
        task("RQ-0001", scheduled_start="2026-11-21T10:00:01Z"),
        task("RQ-0002", scheduled_start="2026-11-21T10:00:00Z"),  # exactly now counts as passed
        task("RQ-0003", scheduled_start="2026-11-20T00:00:00Z"),
    )
    assert runnable(queue) == ["RQ-0002", "RQ-0003"]
    assert reason(queue, "RQ-0001") == "scheduled to start at 2026-11-21T10:00:01Z"


@pytest.mark.parametrize(
    "lifecycle", [Lifecycle.RUNNING, Lifecycle.CHECKING, Lifecycle.REMEDIATING, Lifecycle.INTEGRATING]
)
def test_non_terminal_worker_excludes(lifecycle: Lifecycle) -> None:
    """A task with work in flight is never started twice, including verified work waiting to land."""
    queue = qf(task("RQ-0001"), task("RQ-0002"))
    workers = [worker("RQ-0001", lifecycle)]
    assert runnable(queue, workers=workers) == ["RQ-0002"]
    assert reason(queue, "RQ-0001", workers=workers) == f"in progress ({lifecycle})"


# Whether a todo task whose worker is in each lifecycle may start again (`worker` gives a failed one
# a retry time in the past). A lifecycle added later has no entry, and the test below fails for it.
RUNNABLE_AFTER = {
    Lifecycle.RUNNING: False,
    Lifecycle.CHECKING: False,
    Lifecycle.REMEDIATING: False,
    Lifecycle.INTEGRATING: False,
    Lifecycle.COMPLETED: False,
    Lifecycle.BLOCKED_PUSH: False,
    Lifecycle.FAILED: True,
}


@pytest.mark.parametrize("lifecycle", list(Lifecycle))
def test_every_lifecycle_is_decided_by_selection(lifecycle: Lifecycle) -> None:
    """Guard: a lifecycle added later must be decided on here, not silently treated as runnable."""
    assert lifecycle in RUNNABLE_AFTER, f"decide whether a task whose worker is {lifecycle} may start"
    queue = qf(task("RQ-0001"), task("RQ-0002"))
    workers = [worker("RQ-0001", lifecycle)]
    expected = ["RQ-0001", "RQ-0002"] if RUNNABLE_AFTER[lifecycle] else ["RQ-0002"]
    assert runnable(queue, workers=workers) == expected
    # `queue explain` gives a reason exactly when selection skips the task.
    assert (reason(queue, "RQ-0001", workers=workers) is None) is RUNNABLE_AFTER[lifecycle]


def test_blocked_push_excludes_and_points_at_retry() -> None:
    queue = qf(task("RQ-0001"))
    workers = [worker("RQ-0001", Lifecycle.BLOCKED_PUSH, last_error="push rejected: protected branch")]
    assert runnable(queue, workers=workers) == []
    message = reason(queue, "RQ-0001", workers=workers)
    assert message is not None
    assert message.startswith("blocked: push rejected: protected branch;")
    assert "`ralph retry RQ-0001`" in message


def test_completed_worker_excludes() -> None:
    """Landed work whose archive commit is not yet visible must not run a second time."""
    queue = qf(task("RQ-0001"))
    workers = [worker("RQ-0001", Lifecycle.COMPLETED, landed_sha="9f1c2ab")]
    assert runnable(queue, workers=workers) == []
    assert (
        reason(queue, "RQ-0001", workers=workers)
        == "landed; waiting for the queue on the base branch to show it done"
    )


def test_failed_with_attempts_used_up_excludes() -> None:
    queue = qf(task("RQ-0001"))
    workers = [worker("RQ-0001", Lifecycle.FAILED, attempt=3, last_error="agent produced no changes")]
    assert runnable(queue, workers=workers, max_attempts=3) == []
    assert reason(queue, "RQ-0001", workers=workers) == "attempts used up (3/3): agent produced no changes"
    assert runnable(queue, workers=workers, max_attempts=4) == ["RQ-0001"]


def test_failed_in_backoff_excludes_until_next_attempt_at() -> None:
    queue = qf(task("RQ-0001"))
    waiting = [worker("RQ-0001", Lifecycle.FAILED, attempt=1, next_attempt_at=NOW + timedelta(seconds=1))]
    assert runnable(queue, workers=waiting) == []
    assert (
        reason(queue, "RQ-0001", workers=waiting) == "retry after 2026-11-21T10:00:01Z (attempt 1/3 failed)"
    )
    due = [worker("RQ-0001", Lifecycle.FAILED, attempt=2, next_attempt_at=NOW)]
    assert runnable(queue, workers=due) == ["RQ-0001"]


def test_failed_with_past_retry_time_is_retried() -> None:
    queue = qf(task("RQ-0001"))
    assert runnable(queue, workers=[worker("RQ-0001", Lifecycle.FAILED, attempt=1)]) == ["RQ-0001"]


def test_failed_without_retry_time_waits_for_a_person() -> None:
    """`ralph cancel` records no retry time: the task is not restarted behind the person's back."""
    queue = qf(task("RQ-0001"))
    stopped = [worker("RQ-0001", Lifecycle.FAILED, attempt=1, next_attempt_at=None, last_error="cancelled")]
    assert runnable(queue, workers=stopped) == []
    assert reason(queue, "RQ-0001", workers=stopped) == (
        "stopped: cancelled; not retried automatically, `ralph retry RQ-0001` runs it again"
    )


def test_worker_of_another_task_does_not_matter() -> None:
    queue = qf(task("RQ-0001"))
    assert runnable(queue, workers=[worker("RQ-0002", Lifecycle.RUNNING)]) == ["RQ-0001"]


def test_selection_keeps_queue_order_among_mixed_reasons() -> None:
    """Blocked tasks are skipped, not reordered: what remains is still in file order."""
    queue = qf(
        task("RQ-0005"),
        task("RQ-0004", depends_on=["RQ-0009"]),
        task("RQ-0003", status="draft"),
        task("RQ-0002"),
        task("RQ-0001", scheduled_start="2027-01-01T00:00:00Z"),
        task("RQ-0006"),
    )
    workers = [worker("RQ-0002", Lifecycle.INTEGRATING)]
    assert runnable(queue, workers=workers) == ["RQ-0005", "RQ-0006"]


# --- through the command line --------------------------------------------------------------------


def run_ralph(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ralph", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"version": 1, "tasks": ' + b"[" * 100_000, "nested more than 128 levels deep"),
        (ralph_bytes(document(task("RQ-0001", status="doing", stauts="todo"))), "stauts: unknown key"),
    ],
    ids=["nested too deeply", "typo"],
)
def test_bad_queue_is_a_user_error_on_the_command_line(repo: Path, content: bytes, problem: str) -> None:
    """Exit 1 with one line naming the file and the problem (not exit 3, a bug); the file is unchanged."""
    (repo / ".ralph").mkdir()
    queue = repo / ".ralph" / "queue.json"
    queue.write_bytes(content)
    result = run_ralph(repo, "queue", "list")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"ralph: error: {queue}: ")
    assert problem in lines[0]
    assert queue.read_bytes() == content
