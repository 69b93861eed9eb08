"""Files as the Rust ralph (fitchmultz/ralph v0.4) writes them, and the rules of its JSON schema.

Its writer is serde_json's pretty printer: two-space indent, `"key": value`, `[]` and `{}` for empty
containers, UTF-8 kept as is, and no newline at the end of the file. Python's json.dumps(indent=2,
ensure_ascii=False) writes exactly that (checked against the Rust repository's own done.jsonc). Its
times are RFC 3339 with 9 fractional digits (`now_utc_rfc3339`), older entries whole seconds.

`schema_problems` checks a document against the rules of the Rust ralph's schemas/queue.schema.json
(required keys, allowed keys, types, enums, bounds), written out here by hand.
"""

from __future__ import annotations

import copy
import json
from typing import Any

NINE = "2026-04-23T15:22:36.396092000Z"
NINE_LATER = "2026-04-23T16:01:02.123456789Z"
WHOLE = "2026-04-23T05:22:08Z"


def rust_task(task_id: str, **fields: Any) -> dict[str, Any]:
    """A task with every field the Rust ralph writes, in its order (serde's struct order), with values
    like its own; `fields` replace or (None) drop keys."""
    doc: dict[str, Any] = {
        "id": task_id,
        "status": "todo",
        "title": f"Unify the wait paths ({task_id})",
        "description": 'Bring subprocess waiting back in line — one strategy, "quoted", ünïcode.',
        "priority": "medium",
        "tags": ["runtime", "quality"],
        "scope": ["crates/ralph/src/runutil/", "cargo test"],
        "evidence": ["`wait.rs` polls with try_wait + sleep"],
        "plan": ["Design one wait abstraction", "Add regression coverage"],
        "notes": [],
        "request": "Look for drift between what is expected and what exists.",
        "agent": {
            "runner": "codex",
            "model": "gpt-5.4",
            "model_effort": "high",
            "phases": 2,
            "iterations": 1,
            "followup_reasoning_effort": "low",
            "runner_cli": {"sandbox": "disabled"},
            "phase_overrides": {
                "phase1": {"runner": "claude", "model": "sonnet", "reasoning_effort": "high"}
            },
        },
        "created_at": NINE,
        "updated_at": NINE_LATER,
        "started_at": NINE_LATER,
        "estimated_minutes": 45,
        "actual_minutes": 0,
        "scheduled_start": "2026-04-23T00:00:00Z",
        "depends_on": [],
        "blocks": [],
        "relates_to": [],
        "duplicates": None,
        "custom_fields": {"runner_used": "codex", "model_used": "gpt-5.4"},
        "parent_id": None,
    }
    if fields.get("status") in ("done", "rejected"):
        fields.setdefault("completed_at", NINE_LATER)
    for key, value in fields.items():
        doc[key] = value
    order = [
        *("id", "status", "title", "description", "priority", "tags", "scope", "evidence", "plan", "notes"),
        *("request", "agent", "created_at", "updated_at", "completed_at", "started_at", "estimated_minutes"),
        *("actual_minutes", "scheduled_start", "depends_on", "blocks", "relates_to", "duplicates"),
        *("custom_fields", "parent_id"),
    ]
    return {k: doc[k] for k in order if k in doc and doc[k] is not None}


def rust_file(*tasks: dict[str, Any]) -> bytes:
    """serde_json::to_string_pretty of a QueueFile: no trailing newline."""
    return json.dumps({"version": 1, "tasks": list(tasks)}, indent=2, ensure_ascii=False).encode()


# --- the schema's rules --------------------------------------------------------------------------------

_STR = ("string",)
_STR_OR_NULL = ("string", "null")
_TASK_TYPES: dict[str, tuple[str, ...]] = {
    "id": _STR,
    "status": _STR,
    "title": _STR,
    "description": _STR_OR_NULL,
    "priority": _STR,
    "tags": ("array",),
    "scope": ("array",),
    "evidence": ("array",),
    "plan": ("array",),
    "notes": ("array",),
    "request": _STR_OR_NULL,
    "agent": ("object", "null"),
    "created_at": _STR,
    "updated_at": _STR,
    "completed_at": _STR_OR_NULL,
    "started_at": _STR_OR_NULL,
    "estimated_minutes": ("integer", "null"),
    "actual_minutes": ("integer", "null"),
    "scheduled_start": _STR_OR_NULL,
    "depends_on": ("array",),
    "blocks": ("array",),
    "relates_to": ("array",),
    "duplicates": _STR_OR_NULL,
    "custom_fields": ("object",),
    "parent_id": _STR_OR_NULL,
}
_STRING_LISTS = ("tags", "scope", "evidence", "plan", "notes", "depends_on", "blocks", "relates_to")
_AGENT_KEYS = {
    "runner",
    "model",
    "model_effort",
    "phases",
    "iterations",
    "followup_reasoning_effort",
    "runner_cli",
    "phase_overrides",
}
_EFFORTS = ("low", "medium", "high", "xhigh")


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def schema_problems(data: bytes) -> list[str]:
    """What the Rust ralph's queue.schema.json would reject in `data` (a queue or done file), or []."""
    doc = json.loads(data)
    problems: list[str] = []
    if not isinstance(doc, dict):
        return ["the file is not an object"]
    if set(doc) - {"version", "tasks"}:
        problems.append(f"unknown top-level keys {sorted(set(doc) - {'version', 'tasks'})}")
    if _type(doc.get("version")) != "integer" or doc["version"] < 0:
        problems.append("version must be a non-negative integer")
    for i, task in enumerate(doc.get("tasks", [])):
        problems += [f"tasks[{i}]: {p}" for p in _task_problems(task)]
    return problems


def _task_problems(task: Any) -> list[str]:
    if not isinstance(task, dict):
        return ["not an object"]
    problems = [f"{k} is required" for k in ("id", "title", "created_at", "updated_at") if k not in task]
    for key, value in task.items():
        if key not in _TASK_TYPES:
            problems.append(f"{key} is not allowed")
        elif _type(value) not in _TASK_TYPES[key]:
            problems.append(f"{key} must be {' or '.join(_TASK_TYPES[key])}, not {_type(value)}")
    if task.get("status", "todo") not in ("draft", "todo", "doing", "done", "rejected"):
        problems.append("status is not one of the five")
    if task.get("priority", "medium") not in ("critical", "high", "medium", "low"):
        problems.append("priority is not one of the four")
    for key in _STRING_LISTS:
        if any(_type(v) != "string" for v in task.get(key) or []):
            problems.append(f"{key} must hold strings")
    for key in ("estimated_minutes", "actual_minutes"):
        if isinstance(task.get(key), int) and not 0 <= task[key] <= 2**32 - 1:
            problems.append(f"{key} must be a uint32")
    for value in (task.get("custom_fields") or {}).values():
        if _type(value) not in ("string", "number", "integer", "boolean"):
            problems.append("custom_fields values must be strings, numbers or booleans")
    agent = task.get("agent")
    if isinstance(agent, dict):
        if set(agent) - _AGENT_KEYS:
            problems.append(f"agent has unknown keys {sorted(set(agent) - _AGENT_KEYS)}")
        if agent.get("model_effort", "default") not in ("default", *_EFFORTS):
            problems.append("agent.model_effort is not an effort")
        if agent.get("followup_reasoning_effort") not in (None, *_EFFORTS):
            problems.append("agent.followup_reasoning_effort is not an effort")
        if agent.get("phases") is not None and not 1 <= agent["phases"] <= 3:
            problems.append("agent.phases must be 1 to 3")
    return problems


def without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for key in keys:
        out.pop(key, None)
    return out
