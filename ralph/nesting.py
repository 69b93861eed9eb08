"""How deeply a JSON, JSONC or TOML text nests, and JSON parsed without ever raising RecursionError.

Python's json and tomllib parsers recurse once per level: a file of ten thousand `[` (a hand edit gone
wrong, or a hostile file) raises RecursionError deep inside a tick. A scan that only counts brackets
outside strings and comments turns that into a one-line error naming the file. JSON is parsed first
and its depth read off the result (the scan only names the line of one too deep); TOML is scanned
before tomllib sees it. Standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

# Far deeper than any queue, state or config file ralph writes or reads (they nest 4 or 5 levels).
MAX_DEPTH = 64


class TooDeep(ValueError):
    def __init__(self, line: int, limit: int) -> None:
        super().__init__(f"nested more than {limit} levels deep (line {line}); flatten it")
        self.line = line


def check_depth(text: str, *, toml: bool = False, limit: int = MAX_DEPTH) -> None:
    """Raise TooDeep when arrays and objects (tables) nest deeper than `limit`.

    JSON strings are "..." with backslash escapes; JSONC adds // and /* */ comments; TOML adds '...',
    triple-quoted strings and # comments. Anything else is left for the real parser to judge.
    """
    if toml:
        _check_toml_depth(text, limit)
    else:
        _check_json_depth(text, limit)


def _check_toml_depth(text: str, limit: int) -> None:
    """Brackets outside TOML's strings ("...", '...', triple-quoted) and # comments, walked."""
    depth = 0
    line = 1
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c in "[{":
            depth += 1
            if depth > limit:
                raise TooDeep(line, limit)
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c in "\"'":
            i, line = _skip_string(text, i, line)
            continue
        elif c == "#":
            i = _skip_to_line_end(text, i)
            continue
        i += 1


# What hides brackets in JSON and JSONC: a string (a line break ends a broken one: the parser will say
# so), a // comment, a /* */ comment (unclosed: to the end).
_JSON_SKIP = re.compile(r'"(?:[^"\\\n]|\\(?:.|\Z))*(?:"|\n|\Z)|//[^\n]*|/\*.*?(?:\*/|\Z)', re.S)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def _check_json_depth(text: str, limit: int) -> None:
    """check_depth for JSON and JSONC, the scanning done by regular expressions: a state file or a
    queue of megabytes is checked on every tick that reads it, where a loop over every character in
    Python was most of reading one. Only a text that is too deep is scanned again for its line."""
    if _depth(_NOT_BRACKETS.sub("", _JSON_SKIP.sub("", text)), limit) < 0:
        return
    bare = _JSON_SKIP.sub(lambda m: "\n" * m.group().count("\n"), text)  # keeps the line numbers
    at = _depth(_NOT_BRACKETS.sub(lambda m: "\n" * m.group().count("\n"), bare), limit)
    raise TooDeep(bare.count("\n", 0, _nth_bracket(bare, at)) + 1, limit)


def _depth(brackets: str, limit: int) -> int:
    """The index in `brackets` (nothing but brackets and line breaks) of the first one past `limit`
    levels deep; -1 when none is."""
    depth = 0
    for n, c in enumerate(brackets):
        if c == "[" or c == "{":
            depth += 1
            if depth > limit:
                return n
        elif depth and c != "\n":
            depth -= 1
    return -1


def _nth_bracket(text: str, n: int) -> int:
    """The position in `text` of the bracket that is character `n` of its brackets-and-line-breaks."""
    seen = -1
    for m in re.finditer(r"[\[\]{}\n]", text):
        seen += 1
        if seen == n:
            return m.start()
    return len(text)


def loads_json(text: str | bytes, *, limit: int = MAX_DEPTH) -> Any:
    """json.loads for a file ralph did not write itself, or one a person may edit: TooDeep (a
    ValueError, as every other complaint of json.loads) past `limit` levels, never RecursionError."""
    if isinstance(text, bytes):
        text = text.decode()  # UnicodeDecodeError is a ValueError too
    decoded = text
    return parsed_within(decoded, lambda: json.loads(decoded), limit=limit)


def parsed_within(text: str, parse: Callable[[], Any], *, limit: int = MAX_DEPTH) -> Any:
    """What `parse` makes of `text` (a JSON parser's result), or TooDeep past `limit` levels.

    The parse comes first and the depth is read off what it built (a state file of 1,000 records:
    ~2 ms, where scanning its text took ~17); for JSON the two depths are the same. Only a text that
    is too deep for the parser, or that it refuses (a depth problem is named before a syntax error, as
    when the scan came first), is scanned, for the line.
    """
    try:
        value = parse()
    except (RecursionError, ValueError):
        check_depth(text, limit=limit)
        raise
    if _deeper_than(value, limit):
        check_depth(text, limit=limit)
        raise TooDeep(1, limit)  # pragma: no cover (the scan finds what the parse built)
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether parsed JSON nests arrays and objects more than `limit` levels deep."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _skip_to_line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _skip_string(text: str, i: int, line: int) -> tuple[int, int]:
    """The index just past the TOML string starting at `i`, and the line number there."""
    quote = text[i]
    if text.startswith(quote * 3, i):
        end = text.find(quote * 3, i + 3)
        end = len(text) if end < 0 else end + 3
        # A closing run may be up to five quotes long ("""a"""""): the extra ones belong to the string.
        while end < len(text) and text[end] == quote:
            end += 1
        return end, line + text.count("\n", i, end)
    escapes = quote == '"'
    j = i + 1
    while j < len(text):
        c = text[j]
        if escapes and c == "\\":
            j += 2
            continue
        if c == quote or c == "\n":  # a line break ends a broken string: the parser will say so
            return j + 1, line + (c == "\n")
        j += 1
    return j, line
