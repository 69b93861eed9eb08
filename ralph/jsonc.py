"""JSONC as the Rust ralph reads it, with the place of every value for editors that must not reformat.

The Rust ralph parses its queue, done and config files with jsonc-parser's defaults: JSON plus `//` and
`/* */` comments, trailing commas, missing commas between items, unquoted ("loose") object keys,
single-quoted strings, hexadecimal numbers and a unary plus. Whatever it accepts is accepted here, so a
queue it runs is never refused; what it refuses (NaN, a bare word as a value, an unterminated string)
is refused here too, with the line and column.

A key given twice keeps its last value, as there; `Scanner.duplicates` lists them for a warning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# A queue file is a few levels deep; a document nested past this is an attack or an accident.
MAX_DEPTH = 128

_WHITESPACE = re.compile(r"[ \t\n\r\ufeff]*")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F]+|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)",
)
# jsonc-parser's loose property names: words and numbers.
_LOOSE_KEY = re.compile(r"[A-Za-z0-9_$][A-Za-z0-9_$\-]*")
# json's own messages for a bad string, by their second word, said the way this module says things.
_STRING_ERRORS = {
    "string": "a string is never closed",
    "control": "a control character inside a string (write it as an escape)",
    "\\escape": "an invalid escape in a string",
    "\\uXXXX": "an invalid \\u escape in a string",
}
_AFTER_VALUE = frozenset(" \t\n\r,]}/")
_WORDS = {"true": True, "false": False, "null": None}
_SINGLE_ESCAPES = {
    "'": "'",
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


class JsoncError(ValueError):
    """Not JSONC: `message` at line `line`, column `column` (both from 1)."""

    def __init__(self, message: str, text: str, pos: int) -> None:
        self.message = message
        self.pos = pos
        self.line = text.count("\n", 0, pos) + 1
        self.column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        super().__init__(f"line {self.line} column {self.column}: {message}")


@dataclass(frozen=True)
class Member:
    """One `key: value` of an object: the key as a string, and where the key and its value are."""

    key: str
    key_start: int
    value_start: int
    value_end: int


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def _finite(token: str) -> float:
    value = float(token)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{token} is too large for a number")
    return value


# The C decoder, for values written in plain JSON (nearly all of them): a Python parser is ~50x slower.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


@dataclass
class Scanner:
    """Reads `text`; every method takes a position and returns the position after what it read."""

    text: str
    duplicates: list[tuple[int, str]] = field(default_factory=list)  # (where the key is, the key)

    def error(self, message: str, pos: int) -> JsoncError:
        return JsoncError(message, self.text, pos)

    def skip(self, pos: int) -> int:
        """Past whitespace and comments."""
        text = self.text
        while True:
            pos = _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]
            if text.startswith("//", pos):
                newline = text.find("\n", pos)
                pos = len(text) if newline < 0 else newline
            elif text.startswith("/*", pos):
                end = text.find("*/", pos + 2)
                if end < 0:
                    raise self.error("a /* comment is never closed", pos)
                pos = end + 2
            else:
                return pos

    def document(self) -> Any:
        """The whole text as one value."""
        pos = self.skip(0)
        if pos == len(self.text):
            raise self.error("the document is empty", pos)
        value, pos = self.value(pos)
        pos = self.skip(pos)
        if pos != len(self.text):
            raise self.error("unexpected text after the end of the document", pos)
        return value

    def value(self, pos: int, depth: int = 0) -> tuple[Any, int]:
        """The value at `pos` (no whitespace before it) and the position after it."""
        if depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep", pos)
        text = self.text
        if pos >= len(text):
            raise self.error("a value is missing at the end of the document", pos)
        char = text[pos]
        if char == "{":
            return self._object(pos, depth)
        if char == "[":
            items: list[Any] = []
            pos = self.skip(pos + 1)
            while True:
                if pos >= len(text):
                    raise self.error("an array is never closed", pos)
                if text[pos] == "]":
                    return items, pos + 1
                item, pos = self.value(pos, depth + 1)
                items.append(item)
                pos = self._separator(pos, "]")
        if char == '"':
            return self._double_quoted(pos)
        if char == "'":
            return self._single_quoted(pos)
        number = _NUMBER.match(text, pos)
        if number and number.end() > pos:
            return self._number(number.group(), pos), number.end()
        word = _LOOSE_KEY.match(text, pos)
        if word and word.group() in _WORDS:
            return _WORDS[word.group()], word.end()
        found = word.group() if word else text[pos]
        raise self.error(f"expected a value, found {found!r}", pos)

    def members(self, pos: int) -> tuple[list[Member], int]:
        """The members of the object at `pos` in the order written (a repeated key each time it is
        written), and the position after the object. Values are skipped, not kept."""
        found: list[Member] = []

        def skip_value(key: str, key_start: int, value_start: int) -> int:
            end = self.value_end(value_start)
            found.append(Member(key, key_start, value_start, end))
            return end

        return found, self.each_member(pos, skip_value)

    def each_member(self, pos: int, visit: Callable[[str, int, int], int]) -> int:
        """Walk the object at `pos`: `visit(key, key_start, value_start)` reads each value and returns
        where it ends. Returns the position after the object."""
        text = self.text
        pos = self.skip(pos + 1)
        while True:
            if pos >= len(text):
                raise self.error("an object is never closed", pos)
            if text[pos] == "}":
                return pos + 1
            key_start = pos
            key, pos = self._key(pos)
            pos = self.skip(pos)
            if not text.startswith(":", pos):
                raise self.error(f"expected ':' after the key {key!r}", pos)
            pos = self._separator(visit(key, key_start, self.skip(pos + 1)), "}")

    def value_end(self, pos: int) -> int:
        """Where the value at `pos` ends: read by the C decoder when it is plain JSON, else parsed here."""
        try:
            end = int(_DECODER.raw_decode(self.text, pos)[1])
        except ValueError:
            return self.value(pos, 1)[1]
        # The decoder stops where JSON stops: "0x1E" would be read as 0. Only a value that ends where
        # a value must end is its.
        if end < len(self.text) and self.text[end] not in _AFTER_VALUE:
            return self.value(pos, 1)[1]
        return end

    def _object(self, pos: int, depth: int) -> tuple[dict[str, Any], int]:
        obj: dict[str, Any] = {}

        def read_value(key: str, key_start: int, value_start: int) -> int:
            value, end = self.value(value_start, depth + 1)
            if key in obj:
                self.duplicates.append((key_start, key))
            obj[key] = value
            return end

        return obj, self.each_member(pos, read_value)

    def _separator(self, pos: int, closer: str) -> int:
        """After an item: a comma (a trailing one too), the closer, or (jsonc-parser allows it) nothing
        between two items. Returns where the next item or the closer starts."""
        pos = self.skip(pos)
        if self.text.startswith(",", pos):
            return self.skip(pos + 1)
        if pos >= len(self.text):
            raise self.error(f"{'an array' if closer == ']' else 'an object'} is never closed", pos)
        return pos

    def _key(self, pos: int) -> tuple[str, int]:
        char = self.text[pos]
        if char == '"':
            return self._double_quoted(pos)
        if char == "'":
            return self._single_quoted(pos)
        word = _LOOSE_KEY.match(self.text, pos)
        if word is None:
            raise self.error(f"expected a key, found {char!r}", pos)
        return word.group(), word.end()

    def _double_quoted(self, pos: int) -> tuple[str, int]:
        try:
            return json.decoder.scanstring(self.text, pos + 1, True)  # type: ignore[attr-defined,no-any-return]
        except json.JSONDecodeError as e:
            raise self.error(_STRING_ERRORS.get(e.msg.split(" ")[1], e.msg.lower()), e.pos) from None

    def _single_quoted(self, pos: int) -> tuple[str, int]:
        text = self.text
        out: list[str] = []
        i = pos + 1
        while True:
            if i >= len(text):
                raise self.error("a string is never closed", pos)
            char = text[i]
            if char == "'":
                return "".join(out), i + 1
            if char == "\\":
                escape = text[i + 1 : i + 2]
                if escape == "u":
                    digits = text[i + 2 : i + 6]
                    if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                        raise self.error("a \\u escape needs four hexadecimal digits", i)
                    out.append(chr(int(digits, 16)))
                    i += 6
                    continue
                if escape not in _SINGLE_ESCAPES:
                    raise self.error(f"invalid escape \\{escape}", i)
                out.append(_SINGLE_ESCAPES[escape])
                i += 2
                continue
            if ord(char) < 0x20:
                raise self.error("a control character inside a string (write it as an escape)", i)
            out.append(char)
            i += 1

    def _number(self, token: str, pos: int) -> int | float:
        sign = -1 if token.startswith("-") else 1
        body = token.lstrip("+-")
        if body[:2].lower() == "0x":
            return sign * int(body[2:], 16)
        if any(c in body for c in ".eE"):
            value = float(token)
            if value in (float("inf"), float("-inf")):
                raise self.error(f"{token} is too large for a number", pos)
            return value
        return int(token)

    def elements(self, pos: int) -> tuple[list[tuple[int, int]], int]:
        """Where each item of the array at `pos` starts and ends, and the position after the array.

        An item in plain JSON is read by the C decoder; one with a comment or a loose key inside, by
        the parser above.
        """
        text = self.text
        spans: list[tuple[int, int]] = []
        pos = self.skip(pos + 1)
        while True:
            if pos >= len(text):
                raise self.error("an array is never closed", pos)
            if text[pos] == "]":
                return spans, pos + 1
            end = self.value_end(pos)
            spans.append((pos, end))
            pos = self._separator(end, "]")


def loads(text: str) -> Any:
    """Parse JSONC; JsoncError names the line and column of a syntax error."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except (json.JSONDecodeError, ValueError, RecursionError):
        pass
    return Scanner(text).document()
