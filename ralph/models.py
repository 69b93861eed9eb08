"""The base for every file model, and one-line messages for validation errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class FileModel(BaseModel):
    """A model read from a file people edit by hand: unknown keys and loose types are errors.

    `strict` keeps "3" from passing as 3 and a typo'd key from being dropped silently.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


def _format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def describe_validation_error(
    error: ValidationError, name_loc: Callable[[tuple[int | str, ...]], str] | None = None
) -> str:
    """Render the first error as `key: problem (got value)`, and how many more there are."""
    errors = error.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    where = name_loc(loc) if name_loc else _format_loc(loc)
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key (a typo?)"
    elif first["type"] != "missing" and "input" in first:
        message += f" (got {_short(first['input'])})"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {message}{more}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
