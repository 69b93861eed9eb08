"""Replaying a task's change onto the train: the prepared path (the change squashed onto its old base,
merged with the position ahead by git's own merge base) gives exactly what the general path (three
scaffolding commits) gives, clean or conflicted, and is not taken when the old base is not in the
base's history (a rewound base)."""

from __future__ import annotations

import os
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import bump_submodule, commit_ignored_submodule, git

import ralph.replay as replay_module
from ralph.git import Git
from ralph.replay import Replayed, Replayer, replay

FILES = [f"f{n}.txt" for n in range(6)]


def commit_eight_line_files(repo: Path) -> None:
    for name in FILES:
        (repo / name).write_text("".join(f"{name} {i}\n" for i in range(8)))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "files")


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
    commit_eight_line_files(repo)
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


def _submodule_moves(repo: Path, ahead_does: str, change_does: str) -> tuple[str, str, str, list[str]]:
    """A submodule `sub` (not checked out), then the position ahead and the change each moving it to a
    commit of its own or removing it: (old base, ahead, head, the two commits)."""
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{first},sub")
    (repo / "sub").mkdir()  # as a submodule not checked out is: an empty directory
    (repo / ".gitmodules").write_text('[submodule "sub"]\n\tpath = sub\n\turl = ./sub\n')
    git(repo, "add", ".gitmodules")
    git(repo, "commit", "-q", "-m", "a submodule")
    old_base = git(repo, "rev-parse", "HEAD")
    moved = [git(repo, "commit-tree", f"{first}^{{tree}}", "-m", f"sub {n}") for n in range(2)]
    tips = []
    for n, does in enumerate((ahead_does, change_does)):
        git(repo, "checkout", "-q", "-f", "--detach", old_base)
        if does == "move":
            tips.append(bump_submodule(repo, "sub", moved[n]))
            continue
        git(repo, "rm", "-q", "--cached", "sub")
        if does == "file":  # a file where the submodule was
            (repo / "sub").rmdir()
            (repo / "sub").write_text(f"a file, side {n}\n")
            git(repo, "add", "sub")
        git(repo, "commit", "-q", "-m", f"no submodule ({does})")
        tips.append(git(repo, "rev-parse", "HEAD"))
    return old_base, tips[0], tips[1], moved


@pytest.mark.parametrize(
    ("ahead_does", "change_does"),
    [("move", "move"), ("remove", "move"), ("move", "remove"), ("remove", "file"), ("file", "file")],
)
def test_a_submodule_conflict_replays_in_a_scratch_clone_as_merge_tree_replays_it(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead_does: str, change_does: str
) -> None:
    """git older than 2.38 merges in a scratch clone, where a submodule is not checked out: on a
    conflicted submodule `git add --all` failed, and the replay raised instead of naming the conflict,
    on every tick."""
    old_base, ahead, head, _ = _submodule_moves(repo, ahead_does, change_does)
    made = {}
    for scratch_replay in (False, True):
        monkeypatch.setattr(replay_module, "_FORCE_SCRATCH", scratch_replay)
        scratch = tmp_path / f"scratch-{scratch_replay}"
        scratch.mkdir()
        made[scratch_replay] = replay(
            Git(repo), old_base=old_base, head=head, onto=ahead, message="m", scratch=scratch
        )
        assert list(scratch.iterdir()) == []  # the scratch clone is gone
    assert made[True].conflicts == made[False].conflicts
    assert "sub" in made[True].conflicts
    assert content(repo, made[True].commit) == content(repo, made[False].commit)
    if ahead_does != "file" or change_does != "file":  # (two files: the markers name the commits merged)
        assert tree(repo, made[True].commit) == tree(repo, made[False].commit)


@pytest.mark.parametrize("scratch_replay", [False, True], ids=["merge-tree", "scratch clone"])
def test_a_submodule_moved_on_both_sides_keeps_the_commit_it_is_replayed_onto(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch_replay: bool
) -> None:
    monkeypatch.setattr(replay_module, "_FORCE_SCRATCH", scratch_replay)
    old_base, ahead, head, moved = _submodule_moves(repo, "move", "move")
    replayed = replay(Git(repo), old_base=old_base, head=head, onto=ahead, message="m", scratch=tmp_path)
    assert replayed.conflicts == ("sub",)
    assert git(repo, "rev-parse", f"{replayed.commit}:sub") == moved[0]


# --- stacking foreseen: the positions a train's joins will make, written at once ----------------------

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def commit_files(repo: Path, parent: str, files: dict[bytes, str | None], tag: str) -> str:
    """A commit on `parent` writing `files` (None deletes one); names are bytes, as an agent may choose."""
    git(repo, "checkout", "-q", "--detach", parent)
    for name, text in files.items():
        path = os.path.join(os.fsencode(repo), name)
        if text is None:
            os.unlink(path)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", tag)
    return git(repo, "rev-parse", "HEAD")


def one_by_one(repo: Path, tmp_path: Path, onto: str, changes: list[tuple[str, str, str]]) -> list[Replayed]:
    """What replaying each change onto the one before makes, without foreseeing anything."""
    made = []
    for old, head, message in changes:
        made.append(replay(Git(repo), old_base=old, head=head, onto=onto, message=message, scratch=tmp_path))
        onto = made[-1].commit
    return made


def tree(repo: Path, commit: str) -> str:
    return git(repo, "rev-parse", f"{commit}^{{tree}}")


def stacked(
    repo: Path, tmp_path: Path, onto: str, changes: list[tuple[str, str, str]]
) -> tuple[int, list[str]]:
    """Foresee `changes` on `onto`, then join them as the train does; how many were foreseen, and the
    commits the joins got."""
    replayer = Replayer(Git(repo), tmp_path)
    foreseen = replayer.stack(onto, changes, NOW)
    made = []
    for old, head, message in changes:
        replayed = replayer.replay(old_base=old, head=head, onto=onto, message=message)
        assert replayed.clean
        made.append(replayed.commit)
        onto = replayed.commit
    return foreseen, made


def test_foreseen_positions_are_the_trees_replaying_one_by_one_makes_in_one_fast_import(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes that add and edit files apart, some started on an older base, names an agent chose
    (newline, quote, backslash, tab, a leading quote, bytes that are not UTF-8, a symlink, an
    executable)."""
    files = {b"a.txt": "a\n", b"dir/b.txt": "b\n", b"c.txt": "c\n"}
    old = commit_files(repo, git(repo, "rev-parse", "HEAD"), files, "files")
    base = commit_files(repo, old, {b"c.txt": "c moved on\n", b"new/base.txt": "base\n"}, "base")
    names: list[bytes] = [
        b"line\nbreak",
        b'say "hi"',
        b"back\\slash",
        b"tab\there",
        b'"lead',
        b"\xff\xfe raw",
    ]
    changes = []
    for n, name in enumerate(names):
        started = old if n % 2 else base
        head = commit_files(
            repo, started, {b"dir/" + name: f"{n}\n", b"a.txt" if n == 0 else b"x%d" % n: "x\n"}, f"t{n}"
        )
        changes.append((started, head, f"task {n}"))
    git(repo, "checkout", "-q", "--detach", base)
    os.symlink("a.txt", repo / "link")
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "link and script")
    changes.append((base, git(repo, "rev-parse", "HEAD"), "task link"))
    expected = one_by_one(repo, tmp_path, base, changes)
    assert all(r.clean for r in expected)
    calls: list[tuple[str, ...]] = []
    real_run = Git.run
    monkeypatch.setattr(Git, "run", lambda self, *a, **k: calls.append(a) or real_run(self, *a, **k))
    foreseen, made = stacked(repo, tmp_path, base, changes)
    assert foreseen == len(changes)
    assert [tree(repo, c) for c in made] == [tree(repo, r.commit) for r in expected]
    assert [git(repo, "rev-parse", f"{c}^") for c in made] == [base, *made[:-1]]
    assert [git(repo, "log", "-1", "--format=%B", c) for c in made] == [m for _, _, m in changes]
    kinds = [a[2] if a[0] == "-c" else a[0] for a in calls]
    assert "merge-tree" not in kinds and "commit-tree" not in kinds
    assert kinds.count("fast-import") == 1


@pytest.mark.parametrize(
    ("ahead", "change", "foreseen"),
    [
        ({b"shared.txt": "ahead\n"}, {b"shared.txt": "task\n"}, 1),  # the same file on both sides
        ({b"x": "a file\n"}, {b"x/y": "under it\n"}, 1),  # a file where the other side has a directory
        ({b"x/y": "under it\n"}, {b"x": "a file\n"}, 1),
        ({b"kept.txt": None}, {b"other.txt": "task\n"}, 0),  # deleted ahead: a rename git might see
        ({b"other.txt": "ahead\n"}, {b"kept.txt": None}, 1),  # deleted by the change
        ({b"d/one": None, b"e/one": "1\n"}, {b"d/two": "task\n"}, 0),  # a directory renamed ahead
    ],
)
def test_stacking_stops_where_the_merge_is_more_than_a_union(
    repo: Path, tmp_path: Path, ahead: dict[bytes, str | None], change: dict[bytes, str | None], foreseen: int
) -> None:
    """The second change meets the first's edits in a way git's merge must judge (or may move), or the
    first deletes a file: from there on everything is left to merge-tree, whose verdict holds."""
    start = commit_files(repo, git(repo, "rev-parse", "HEAD"), {b"kept.txt": "k\n", b"d/one": "1\n"}, "files")
    first = commit_files(repo, start, ahead, "first")
    second = commit_files(repo, start, change, "second")
    third = commit_files(repo, start, {b"third.txt": "3\n"}, "third")
    changes = [(start, first, "first"), (start, second, "second"), (start, third, "third")]
    expected = one_by_one(repo, tmp_path, start, changes)
    replayer = Replayer(Git(repo), tmp_path)
    assert replayer.stack(start, changes, NOW) == foreseen
    onto = start
    for (old, head, message), want in zip(changes, expected, strict=True):
        got = replayer.replay(old_base=old, head=head, onto=onto, message=message)
        assert got.conflicts == want.conflicts
        assert content(repo, got.commit) == content(repo, want.commit)
        onto = got.commit


@pytest.mark.parametrize("seed", range(8))
def test_stacking_random_changes_gives_what_one_by_one_gives(repo: Path, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    commit_eight_line_files(repo)
    old = git(repo, "rev-parse", "HEAD")
    base = commit_edits(repo, old, rng, "base") if rng.random() < 0.5 else old
    changes = []
    for n in range(5):
        started = rng.choice([old, base])
        if rng.random() < 0.6:  # a change of its own files
            head = commit_files(
                repo, started, {f"own{seed}-{n}/{k}.txt".encode(): f"{n}\n" for k in range(2)}, f"t{n}"
            )
        else:
            head = commit_edits(repo, started, rng, f"t{n}")
        changes.append((started, head, f"task {n}"))
    expected = one_by_one(repo, tmp_path, base, changes)
    replayer = Replayer(Git(repo), tmp_path)
    replayer.stack(base, changes, NOW)
    onto = base
    for (started, head, message), want in zip(changes, expected, strict=True):
        got = replayer.replay(old_base=started, head=head, onto=onto, message=message)
        assert got.conflicts == want.conflicts
        assert content(repo, got.commit) == content(repo, want.commit)
        if not want.conflicts:
            assert tree(repo, got.commit) == tree(repo, want.commit)
        onto = got.commit


def test_a_base_that_lacks_a_file_the_change_started_with_is_left_to_merge_tree(
    repo: Path, tmp_path: Path
) -> None:
    """The base moved on (or was rewound) past a file the change's old base had: git may see a rename
    there, so nothing is foreseen, and the rewound file does not come back."""
    start = commit_files(
        repo, git(repo, "rev-parse", "HEAD"), {b"kept.txt": "k\n", b"gone.txt": "g\n"}, "files"
    )
    base = commit_files(repo, start, {b"gone.txt": None, b"moved.txt": "g\n"}, "base")
    head = commit_files(repo, start, {b"task.txt": "t\n"}, "task")
    replayer = Replayer(Git(repo), tmp_path)
    assert replayer.stack(base, [(start, head, "task")], NOW) == 0
    got = replayer.replay(old_base=start, head=head, onto=base, message="task")
    assert git(repo, "ls-tree", "--name-only", got.commit).split() == ["kept.txt", "moved.txt", "task.txt"]


def test_nothing_to_stack_asks_git_nothing(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every tick's train prepares the workers waiting to join; most ticks have none."""
    monkeypatch.setattr(Git, "run", lambda *a, **k: pytest.fail(f"git was asked {a[1:]}"))
    assert Replayer(Git(repo), tmp_path).stack(git(repo, "rev-parse", "HEAD"), [], NOW) == 0


def test_a_checkout_that_ignores_case_still_stacks_the_tree_merge_tree_makes(
    repo: Path, tmp_path: Path
) -> None:
    """core.ignorecase (the default on macOS and Windows) must not make fast-import take `readme` for
    the position ahead's `README`, nor `Src/` for `src/`: both files stay, as in git's merge."""
    old = commit_files(repo, git(repo, "rev-parse", "HEAD"), {b"src/a.py": "a\n"}, "old")
    onto = commit_files(repo, old, {b"README": "ahead's readme\n"}, "ahead")
    head = commit_files(repo, old, {b"readme": "the change's readme\n", b"Src/b.py": "b\n"}, "change")
    git(repo, "config", "core.ignorecase", "true")  # (after the commits: `git add` would fold Src/ too)
    expected = one_by_one(repo, tmp_path, onto, [(old, head, "change")])
    foreseen, made = stacked(repo, tmp_path, onto, [(old, head, "change")])
    assert foreseen == 1
    assert tree(repo, made[0]) == tree(repo, expected[0].commit)
    listed = git(repo, "ls-tree", "-r", "--name-only", made[0]).split()
    assert sorted(listed) == ["README", "Src/b.py", "readme", "src/a.py"]


@pytest.mark.parametrize("hidden_by", ["gitmodules", "config"])
def test_a_submodule_bump_is_stacked_though_diffs_are_told_to_ignore_the_submodule(
    repo: Path, tmp_path: Path, hidden_by: str
) -> None:
    """`ignore = all` for a submodule (in .gitmodules or config) hides its bumps from `git diff`; the
    train's diff of a change must see them, or the bump is dropped from the position."""
    old = commit_ignored_submodule(repo, "mod", hidden_by=hidden_by)
    onto = commit_files(repo, old, {b"ahead.txt": "ahead\n"}, "ahead")
    bumped = commit_files(repo, old, {b"note.txt": "bump\n"}, "note")
    git(repo, "checkout", "-q", "--detach", old)
    head = bump_submodule(repo, "mod", bumped)
    expected = one_by_one(repo, tmp_path, onto, [(old, head, "bump")])
    foreseen, made = stacked(repo, tmp_path, onto, [(old, head, "bump")])
    assert foreseen == 1
    assert git(repo, "rev-parse", f"{made[0]}:mod") == bumped
    assert tree(repo, made[0]) == tree(repo, expected[0].commit)
