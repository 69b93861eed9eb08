"""What a `make` gate would run: the makefile it reads and the targets it asks for, and whether that
makefile has a rule for them. For `ralph doctor`: `ci.command = ["make", "ci"]` in a repository with no
`ci:` rule fails every gate run, and so every task, before any agent is at fault.

Only what a plain reading can tell: a makefile that includes others, or builds target names from
variables or patterns, may define the target where this reader cannot see it (`unsure`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

MAKE_PROGRAMS = frozenset({"make", "gmake"})
# GNU make's search order when no -f is given.
DEFAULT_NAMES = ("GNUmakefile", "makefile", "Makefile")

# Options of GNU make that take the next word as their value (the -j/-l values are optional: a number).
_WITH_VALUE = {"-C", "-f", "-I", "-o", "-W", "--directory", "--file", "--makefile", "--include-dir"}
_WITH_VALUE |= {"--old-file", "--assume-old", "--what-if", "--new-file", "--assume-new"}
_OPTIONAL_NUMBER = {"-j", "--jobs", "-l", "--load-average", "--max-load"}


@dataclass(frozen=True)
class Invocation:
    """A make command line, as far as finding its makefile and its goals goes."""

    directory: str = "."  # -C, relative to where the gate runs (the repository root)
    files: tuple[str, ...] = ()  # -f; empty: DEFAULT_NAMES
    goals: tuple[str, ...] = ()  # empty: the makefile's first target

    def candidates(self) -> list[str]:
        """Where the makefile may be, relative to the repository root, in make's order."""
        names = self.files or DEFAULT_NAMES
        return [str(PurePosixPath(self.directory) / name) for name in names]


def is_make(argv: Sequence[str]) -> bool:
    return bool(argv) and PurePosixPath(argv[0]).name in MAKE_PROGRAMS


def parse(argv: Sequence[str]) -> Invocation:
    """The makefile and goals of `make ...` (argv[0] is make itself)."""
    directory = "."
    files: list[str] = []
    goals: list[str] = []
    words = list(argv[1:])
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            goals += [w for w in words[i:] if "=" not in w]
            break
        name, eq, value = word.partition("=")
        if word.startswith("--") and eq and name in _WITH_VALUE:
            directory, files = _option(name, value, directory, files)
            continue
        if word in _WITH_VALUE:
            if i < len(words):
                directory, files = _option(word, words[i], directory, files)
                i += 1
            continue
        if len(word) > 2 and word[:2] in ("-C", "-f", "-I", "-o", "-W"):
            directory, files = _option(word[:2], word[2:], directory, files)
            continue
        if word in _OPTIONAL_NUMBER:
            if i < len(words) and words[i].replace(".", "", 1).isdigit():
                i += 1
            continue
        if word.startswith("-") or "=" in word:
            continue  # a flag, or a variable assignment
        goals.append(word)
    return Invocation(directory=directory, files=tuple(files), goals=tuple(goals))


def _option(name: str, value: str, directory: str, files: list[str]) -> tuple[str, list[str]]:
    if name in ("-C", "--directory"):
        return str(PurePosixPath(directory) / value), files
    if name in ("-f", "--file", "--makefile"):
        return directory, [*files, value]
    return directory, files


# A rule's first line: targets, one or two colons, and not an assignment (`:=`, `::=`, `:::=`).
_RULE = re.compile(r"^(?P<targets>[^\s#:=][^#:=]*?)\s*::?(?![:=])")
_INCLUDE = re.compile(r"^\s*-?s?include\s")


@dataclass
class Rules:
    """The rule targets a makefile names plainly, and whether it may have more this reader cannot see."""

    targets: set[str] = field(default_factory=set)
    first: str | None = None  # the default goal: the first target not starting with '.'
    unsure: list[str] = field(default_factory=list)  # why a missing target may still exist


def read_rules(text: str) -> Rules:
    rules = Rules()
    for line in text.splitlines():
        if line.startswith("\t") or not line.strip() or line.lstrip().startswith("#"):
            continue  # a recipe, a blank line, a comment
        if _INCLUDE.match(line):
            rules.unsure.append("it includes other makefiles")
            continue
        m = _RULE.match(line)
        if m is None:
            continue
        for target in m["targets"].split():
            if "%" in target:
                rules.unsure.append("it has pattern rules")
            elif "$" in target:
                rules.unsure.append("it names targets with variables")
            else:
                rules.targets.add(target)
                if rules.first is None and not target.startswith("."):
                    rules.first = target
    rules.unsure = list(dict.fromkeys(rules.unsure))
    return rules
