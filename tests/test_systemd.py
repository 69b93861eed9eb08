"""Reading systemd units as systemd does: the parser and instance names (doctor's checks use them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ralph.systemd import parse_unit, systemd_escape_path


def test_parse_unit_joins_continuations_and_drops_comments() -> None:
    text = (
        "# comment\n[Service]\n; another\n"
        "ExecStart=/usr/bin/ralph \\\n  -C /srv/app run\nKillMode = process\n"
    )
    entries = parse_unit(text)
    assert [(section, key) for section, key, _ in entries] == [
        ("Service", "ExecStart"),
        ("Service", "KillMode"),
    ]
    assert entries[0][2].split() == ["/usr/bin/ralph", "-C", "/srv/app", "run"]
    assert entries[1][2] == "process"


@pytest.mark.parametrize(
    ("path", "escaped"),
    [
        ("/srv/app", "srv-app"),
        ("/home/ralph/my app", "home-ralph-my\\x20app"),
        ("/", "-"),
        ("/srv/.x", "srv-.x"),
    ],
)
def test_systemd_escape_path(path: str, escaped: str) -> None:
    assert systemd_escape_path(Path(path)) == escaped
    found = shutil.which("systemd-escape")
    if found:  # where systemd is installed, agree with it
        assert (
            subprocess.run([found, "--path", path], capture_output=True, text=True).stdout.strip() == escaped
        )
