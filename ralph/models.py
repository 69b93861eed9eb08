"""The base for every file model, and one-line messages for validation errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails


class FileModel(BaseModel):
    """A model read from a file people edit by hand: unknown keys and loose types are errors.

    `strict` keeps "3" from passing as 3 and a typo'd key from being dropped silently.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


def no_nul(value: str) -> str:
    # JSON ("\u0000") and TOML ("\u0000") can both spell a NUL. It cannot go into an argv, a path, a
    # prompt file or a log line intact (subprocess and os raise ValueError deep inside a tick), so it is
    # refused at the door, per key, where the message can name the key that holds it.
    if "\0" in value:
        raise ValueError("contains a NUL character (\\u0000); remove it")
    return value


# A string from a file people edit: anything but NUL.
Text = Annotated[str, AfterValidator(no_nul)]


def _format_loc(loc: Sequence[int | str]) -> str:
    return _format_rest(loc).removeprefix(".") or "(top level)"


def _format_rest(loc: Sequence[int | str]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


Namer = Callable[[tuple[int | str, ...]], str]


def item_namer(raw: object, items: str, id_key: str, label: Callable[[int, str | None], str]) -> Namer:
    """Name the location of an error in the list `raw[items]` by the item's id where it has one
    (`task 'RQ-0004' (tasks[3]).status`), so a person finds it in a file of thousands."""
    listed = raw.get(items) if isinstance(raw, dict) else None

    def name(loc: tuple[int | str, ...]) -> str:
        if len(loc) < 2 or loc[0] != items or not isinstance(loc[1], int):
            return _format_loc(loc)
        index = loc[1]
        item_id = None
        if isinstance(listed, list) and index < len(listed) and isinstance(listed[index], dict):
            candidate = listed[index].get(id_key)
            item_id = candidate if isinstance(candidate, str) else None
        return label(index, item_id) + _format_rest(loc[2:])

    return name


def describe_validation_error(error: ValidationError, name_loc: Namer | None = None) -> str:
    """Render the first error as `key: problem (got value)`, and how many more there are."""
    errors = error.errors(include_url=False)
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return _describe(errors[0], name_loc) + more


def describe_errors(error: ValidationError, name_loc: Namer | None = None) -> list[str]:
    """Every error, one `key: problem (got value)` line each: for a command whose job is to list them."""
    return [_describe(e, name_loc) for e in error.errors(include_url=False)]


def _describe(first: ErrorDetails, name_loc: Namer | None) -> str:
    loc = tuple(first["loc"])
    where = name_loc(loc) if name_loc else _format_loc(loc)
    message = first["msg"]
    if first["type"] == "value_error":
        # Our validators write whole sentences; pydantic's "Value error, " prefix only adds noise.
        message = message.removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key (a typo?)"
    elif first["type"] != "missing" and "input" in first and _worth_quoting(first["input"], message):
        message += f" (got {_short(first['input'])})"
    return f"{where}: {message}"


def _worth_quoting(value: Any, message: str) -> bool:
    """Whether `(got ...)` adds anything: not a whole object (a model-level check names its key itself),
    and not a value the message already quotes."""
    return not isinstance(value, dict) and repr(value) not in message


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
