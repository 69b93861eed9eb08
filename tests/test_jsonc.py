"""The JSONC dialect of the Rust ralph (jsonc-parser's defaults): what it accepts is accepted, what it
refuses is refused with the line and column."""

from __future__ import annotations

from typing import Any

import pytest

from ralph.jsonc import JsoncError, Scanner, loads


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ('// c\n{/* c */ "a": [1, 2,], } // end', {"a": [1, 2]}),
        ("{a: 1, b_2: 'x', $c: true, 3: null}", {"a": 1, "b_2": "x", "$c": True, "3": None}),
        ("[1 2 3]", [1, 2, 3]),  # missing commas
        ('{"a": 1 "b": 2}', {"a": 1, "b": 2}),
        ("[0x1F, +3, -2.5e1, .5]", [31, 3, -25.0, 0.5]),
        ("['it\\'s', 'tab\\t', '\\u00e9']", ["it's", "tab\t", "é"]),
        ('{"k": 1, "k": 2}', {"k": 2}),  # the last counts, as in serde_json's map
        ('\ufeff{"a": "// not a comment /* either */"}', {"a": "// not a comment /* either */"}),
    ],
)
def test_accepted(text: str, value: Any) -> None:
    assert loads(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": NaN}', "line 1 column 7: expected a value, found 'NaN'"),
        ('{"a": Infinity}', "expected a value, found 'Infinity'"),
        ('{"a": 1e999}', "1e999 is too large for a number"),
        ('{"a": "x', "line 1 column 7: a string is never closed"),
        ('{\n  "a": 1,\n  "b": /* open', "line 3 column 8: a /* comment is never closed"),
        ("{\n  a 1\n}", "line 2 column 5: expected ':' after the key 'a'"),
        ("[1, 2", "an array is never closed"),
        ("", "the document is empty"),
        ('{"a": 1} {"b": 2}', "unexpected text after the end of the document"),
        ("[" * 1000 + "]" * 1000, "nested more than 128 levels deep"),
        ("{'a': 'line\nbreak'}", "a control character inside a string"),
    ],
)
def test_refused_with_where(text: str, message: str) -> None:
    with pytest.raises(JsoncError) as caught:
        loads(text)
    assert message in str(caught.value)


def test_members_and_elements_say_where_each_value_is() -> None:
    text = '{\n  "version": 1,\n  tasks: [ {"id": 1}, {id: 0x2} ] // c\n}'
    scanner = Scanner(text)
    members, end = scanner.members(0)
    assert [m.key for m in members] == ["version", "tasks"]
    assert end == len(text)
    tasks = members[1]
    spans, after = scanner.elements(tasks.value_start)
    assert [text[a:b] for a, b in spans] == ['{"id": 1}', "{id: 0x2}"]
    assert text[tasks.value_start : after] == tasks_text(text)


def tasks_text(text: str) -> str:
    return text[text.index("[") : text.index("]") + 1]


def test_duplicate_keys_are_noted_for_a_warning() -> None:
    scanner = Scanner('{"a": {"s": 1, "s": 2}, "a": 3}')
    scanner.document()
    assert [key for _, key in scanner.duplicates] == ["s", "a"]
