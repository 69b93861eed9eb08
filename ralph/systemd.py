"""systemd units as systemd reads them: which installed ralph service runs in a checkout, and how.

Read-only and offline: unit files and their drop-ins are parsed here (comments, continuations,
specifiers, `systemd-escape --path` instance names), never through systemctl, so it works for a user
who cannot reach the bus and in CI.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from shlex import split


def unit_directories() -> list[Path]:
    """Where a ralph unit for this checkout would be installed: the user's units, then the system's."""
    home = Path(os.environ.get("HOME") or "~").expanduser()
    xdg = Path(os.environ["XDG_CONFIG_HOME"]) if os.environ.get("XDG_CONFIG_HOME") else home / ".config"
    dirs = [
        xdg / "systemd/user",
        home / ".config/systemd/user",
        Path("/etc/systemd/user"),
        Path("/etc/systemd/system"),
    ]
    return list(dict.fromkeys(dirs))


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    """A unit file as (section, key, value) in order, as systemd reads it: comments dropped,
    backslash-continued lines joined."""
    entries = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif "=" in line:
            key, value = line.split("=", 1)
            entries.append((section, key.strip(), value.strip()))
    return entries


def values(entries: Iterable[tuple[str, str, str]], section: str, key: str) -> list[str]:
    """Every assignment of `key` in order; an empty one resets the list, as in systemd."""
    values: list[str] = []
    for s, k, v in entries:
        if s == section and k == key:
            values = [] if not v else [*values, v]
    return values


def systemd_escape_path(path: Path) -> str:
    """`systemd-escape --path`: the instance name that makes `ralph@<it>.service` mean `path`."""
    text = str(path).strip("/")
    if not text:
        return "-"
    out = []
    for i, ch in enumerate(text):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_.") and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


def _unescape(text: str) -> str:
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "-":
            out += b"/"
            i += 1
        elif text.startswith("\\x", i) and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2 : i + 4]):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            out += text[i].encode()
            i += 1
    return out.decode(errors="replace")


def _expand_specifiers(value: str, *, unit: str, instance: str, home: str) -> str:
    prefix = unit.split("@", 1)[0].rsplit(".", 1)[0]

    def one(m: re.Match[str]) -> str:
        c = m.group(1)
        return {
            "%": "%",
            "i": instance,
            "I": _unescape(instance),
            "f": "/" + _unescape(instance or prefix),
            "h": home,
            "n": unit,
            "p": prefix,
        }.get(c, m.group(0))

    return re.sub(r"%(.)", one, value)


def _names_checkout(entries: list[tuple[str, str, str]], root: Path, expand: Callable[[str], str]) -> bool:
    """Whether a unit runs ralph in `root`: its WorkingDirectory=, or a `-C <root>` in ExecStart=."""
    target = root.resolve()
    home = os.environ.get("HOME", "/")

    def same(value: str) -> bool:
        value = expand(value).lstrip("-")  # `-/path`: systemd ignores a missing directory
        if value == "~" or value.startswith("~/"):
            value = home + value[1:]
        return bool(value) and os.path.isabs(value) and Path(value).resolve() == target

    if any(same(v) for v in values(entries, "Service", "WorkingDirectory")[-1:]):
        return True
    for command in values(entries, "Service", "ExecStart"):
        try:
            words = split(command.lstrip("@-:+!"))
        except ValueError:
            continue
        for i, word in enumerate(words):
            if word == "-C" and i + 1 < len(words) and same(words[i + 1]):
                return True
            if word.startswith("-C") and len(word) > 2 and same(word[2:]):
                return True
    return False


@dataclass(frozen=True)
class UnitFinding:
    path: Path
    kill_mode: str | None  # None: not set, so systemd's default, control-group
    user_unit: bool


def find_units(root: Path, directories: Sequence[Path] | None = None) -> list[UnitFinding]:
    """ralph service units, in `directories`, that run ralph in `root`, with their effective KillMode."""
    home = os.environ.get("HOME", "/")
    found = []
    for directory in directories if directories is not None else unit_directories():
        if not directory.is_dir():
            continue
        for unit in sorted(directory.glob("*ralph*.service")):
            name = unit.name
            instance = systemd_escape_path(root.resolve()) if name.endswith("@.service") else ""
            instance_name = name.replace("@.service", f"@{instance}.service") if instance else name
            # Drop-ins override the unit file, in name order: the template's, then the instance's.
            dropins = [unit.with_name(name + ".d"), unit.with_name(instance_name + ".d")]
            texts = []
            try:
                texts.append(unit.read_text(errors="replace"))
                for d in dict.fromkeys(dropins):
                    if d.is_dir():
                        texts.extend(p.read_text(errors="replace") for p in sorted(d.glob("*.conf")))
            except OSError:
                continue
            entries = [e for text in texts for e in parse_unit(text)]

            def expand(value: str, unit_name: str = instance_name, inst: str = instance) -> str:
                return _expand_specifiers(value, unit=unit_name, instance=inst, home=home)

            if not _names_checkout(entries, root, expand):
                continue
            modes = values(entries, "Service", "KillMode")
            found.append(
                UnitFinding(
                    path=unit,
                    kill_mode=modes[-1] if modes else None,
                    user_unit="/systemd/user" in unit.parent.as_posix(),
                )
            )
    return found
