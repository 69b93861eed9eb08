"""Replaying a task's change onto the train: the prepared path (the change squashed onto its old base,
merged with the position ahead by git's own merge base) gives exactly what the general path (three
scaffolding commits) gives, clean or conflicted, and is not taken when the old base is not in the
base's history (a rewound base)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from conftest import git

from ralph.git import Git
from ralph.replay import Replayer, replay

FILES = [f"f{n}.txt" for n in range(6)]


def commit_edits(repo: Path, parent: str, rng: random.Random, tag: str) -> str:
    """A commit on `parent` that adds, changes, deletes or renames a few files at random."""
    git(repo, "checkout", "-q", "--detach", parent)
    for name in rng.sample(FILES, 3):
        path = repo / name
        what = rng.choice(["write", "write", "delete", "rename"])
        if what == "write" or not path.exists():
            lines = path.read_text().splitlines() if path.exists() else [f"{name} {i}" for i in range(8)]
            lines[rng.randrange(len(lines))] = f"{tag} edit"
            path.write_text("\n".join(lines) + "\n")
        elif what == "delete":
            path.unlink()
        else:
            path.rename(repo / f"{name}.{tag}")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", tag)
    return git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("seed", range(12))
def test_the_prepared_replay_merges_as_the_scaffolded_one(
    repo: Path, tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    for name in FILES:
        (repo / name).write_text("".join(f"{name} {i}\n" for i in range(8)))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "files")
    old_base = git(repo, "rev-parse", "HEAD")
    base = commit_edits(repo, old_base, rng, "base")  # the base moved on since the task began
    ahead = commit_edits(repo, base, rng, "ahead")  # the position ahead stands on the base
    head = commit_edits(repo, commit_edits(repo, old_base, rng, "task1"), rng, "task2")  # two commits
    ours = Git(repo)
    general = replay(ours, old_base=old_base, head=head, onto=ahead, message="m", scratch=tmp_path)
    replayer = Replayer(Git(repo), tmp_path)
    replayer.prepare([(old_base, head)], base)
    monkeypatch.setattr(replayer, "_scaffold", lambda *a: pytest.fail("the prepared path scaffolded"))
    prepared = replayer.replay(old_base=old_base, head=head, onto=ahead, message="m", base=base)
    assert replayer._squashed
    assert prepared.conflicts == general.conflicts
    assert content(repo, prepared.commit) == content(repo, general.commit)
    if not general.conflicts:
        tree = git(repo, "rev-parse", f"{general.commit}^{{tree}}")
        assert git(repo, "rev-parse", f"{prepared.commit}^{{tree}}") == tree
    assert git(repo, "rev-parse", f"{prepared.commit}^") == ahead


def content(repo: Path, commit: str) -> dict[str, str]:
    """Every file of `commit`, with the commit names git writes after conflict markers left out (they
    name the commits merged, which differ between the two paths)."""
    files = git(repo, "ls-tree", "-r", "--name-only", commit).splitlines()
    return {f: re.sub(r"(?m)^(<{7}|>{7}) .*$", r"\1", git(repo, "show", f"{commit}:{f}")) for f in files}


def test_an_old_base_outside_the_base_s_history_takes_the_general_path(repo: Path, tmp_path: Path) -> None:
    """The base was rewound past the task's old base: git's merge base would be older than the old
    base, and the rewound commit's change would come back; the scaffolding keeps it out."""
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a")
    kept = git(repo, "rev-parse", "HEAD")
    (repo / "rewound.txt").write_text("taken back\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "rewound later")
    old_base = git(repo, "rev-parse", "HEAD")
    (repo / "task.txt").write_text("task\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "task")
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach", kept)
    (repo / "b.txt").write_text("b\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the base after the rewind")
    base = git(repo, "rev-parse", "HEAD")
    replayer = Replayer(Git(repo), tmp_path)
    replayer.prepare([(old_base, head)], base)
    assert not replayer._squashed
    replayed = replayer.replay(old_base=old_base, head=head, onto=base, message="m", base=base)
    assert replayed.clean
    files = git(repo, "ls-tree", "--name-only", replayed.commit).split()
    assert files == ["a.txt", "b.txt", "task.txt"]  # rewound.txt does not come back
