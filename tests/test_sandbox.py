"""ralph's bubblewrap box itself (ralph.sandbox.wrap), run for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ralph import sandbox

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None and os.environ.get("CI") != "true",
    reason="bubblewrap is not installed (apt-get install bubblewrap)",
)


def test_a_virtual_environment_under_tmp_runs_in_the_box(tmp_path: Path) -> None:
    """A venv under /tmp (the box's /tmp is private) is bound back read-only, and so is the program it
    runs, a symlink inside it: the second bind must not fail on the first ("Can't create file")."""
    assert str(tmp_path).startswith("/tmp/")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python3"
    python.symlink_to(os.path.realpath(sys.executable))
    box = sandbox.Box(cwd=str(tmp_path), writable=(), readonly=(str(venv), str(python)), hidden=())
    argv = sandbox.wrap([str(python), "-c", "print('in the box')"], box)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "in the box\n", "")


def test_a_cover_between_keeps_its_inner_binds(tmp_path: Path) -> None:
    """A path inside a hidden directory inside a bound one is bound again, after the cover."""
    shown = tmp_path / "shown"
    secret = shown / "secret"
    secret.mkdir(parents=True)
    (secret / "key").write_text("hidden\n")
    (secret / "prompt.md").write_text("visible\n")
    box = sandbox.Box(
        cwd=str(tmp_path),
        writable=(),
        readonly=(str(shown), str(secret / "prompt.md")),
        hidden=(str(secret),),
    )
    argv = sandbox.wrap(["sh", "-c", f"cat {secret}/prompt.md; ls {secret}"], box)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["visible", "prompt.md"]
