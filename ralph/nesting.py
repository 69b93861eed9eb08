"""How deeply a JSON, JSONC or TOML text nests, found before any parser sees it.

Python's json and tomllib parsers recurse once per level: a file of ten thousand `[` (a hand edit gone
wrong, or a hostile file) raises RecursionError deep inside a tick. A scan that only counts brackets
outside strings and comments turns that into a one-line error naming the file. Standard library only.
"""

from __future__ import annotations

import json
import re
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
    if not toml:
        _check_json_depth(text, limit)
        return
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
        elif c == '"' or (toml and c == "'"):
            i, line = _skip_string(text, i, line, toml=toml)
            continue
        elif toml and c == "#" or not toml and text.startswith("//", i):
            i = _skip_to_line_end(text, i)
            continue
        elif not toml and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            line += text.count("\n", i, end)
            i = end
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
    # Counting brackets is C-fast; only a text with more of them than the limit needs the real scan.
    if text.count("[") + text.count("{") > limit:
        check_depth(text, limit=limit)
    return json.loads(text)


def _skip_to_line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _skip_string(text: str, i: int, line: int, *, toml: bool) -> tuple[int, int]:
    """The index just past the string starting at `i`, and the line number there."""
    quote = text[i]
    if toml and text.startswith(quote * 3, i):
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
