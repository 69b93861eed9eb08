"""Replaying a task's work onto another base: squashed, in ralph's own repository, never in a workspace.

A task's change is the difference between the base it started from and its verified commit. ralph
replays that difference, as one commit, onto the base as it is now (or onto the position ahead of it
in the merge train): a three-way merge whose merge base is the task's old base, so commits someone
removed from the base by rewinding it never come back, and a conflict is met once, not once per agent
commit.

With git 2.38 or newer this is `git merge-tree --write-tree`: objects only, no work tree, no index,
nothing on disk a killed tick could leave half-done. Older git gets a scratch clone in a temporary
directory (deleted afterwards, and by the next tick's repair if a kill left it) that merges there.
Either way a conflict yields a tree with the conflict markers in place and the list of conflicted
paths, which a remediation agent then resolves by editing files only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ralph.crash import crashpoint
from ralph.files import scratch_dir
from ralph.git import UNTRUSTED, Git, NewCommit, TreeEntry, tree_diffs, write_commits

MERGE_TREE_VERSION = (2, 38)
SCRATCH_PREFIX = "replay-"
_SCAFFOLD_DATE = datetime(2000, 1, 1, tzinfo=UTC)
_MARKER = re.compile(rb"^(<{7}|={7}|>{7})( |$)", re.M)


@dataclass(frozen=True)
class Replayed:
    """The commit made on the new base, or, on a conflict, one whose tree holds the markers."""

    commit: str
    conflicts: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.conflicts


def replay(git: Git, *, old_base: str, head: str, onto: str, message: str, scratch: Path) -> Replayed:
    """`old_base..head` as one commit on `onto`, with `message` (the parent is `onto`).

    When it conflicts, the commit returned has the conflicted files with their markers in its tree
    (other files merged), and `conflicts` names them; it must never land as it is.
    """
    return Replayer(git, scratch).replay(old_base=old_base, head=head, onto=onto, message=message)


class Replayer:
    """Replays for one tick's train, readied for many positions at once. `stack` writes every position
    whose merge can only be a union in one `git fast-import`. For the rest, every position stands on
    the train's base, so a task whose old base is in that base's history needs no scaffolding: its
    change squashed onto its old base (all of them in one fast-import, `prepare`) meets the position
    ahead in `merge-tree`, whose own merge base is then exactly the old base (two git commands a
    position, where the general case takes three)."""

    def __init__(self, git: Git, scratch: Path) -> None:
        self.git = git
        self.scratch = scratch
        # (old base, head, onto, message) -> the position stack() wrote for it
        self._ready: dict[tuple[str, str, str, str], str] = {}
        # (old base, base) -> whether the first is in the second's history
        self._in_history: dict[tuple[str, str], bool] = {}
        # (old base, head) -> head's tree as one commit on the old base
        self._squashed: dict[tuple[str, str], str] = {}

    def prepare(self, changes: Sequence[tuple[str, str]], base: str) -> None:
        """Ready the squashes of `changes` ((old base, head) each) that will stack on `base`: the trees
        and the history asked once for all, the squashes written in one go."""
        trees = dict(zip((h for _, h in changes), self.git.trees([h for _, h in changes]), strict=True))
        wanted = [
            (old, head)
            for old, head in dict.fromkeys(changes)
            if self._stands_on(old, base) and (old, head) not in self._squashed
        ]
        made = write_commits(
            self.git,
            [
                NewCommit({}, "ralph: replay change", _SCAFFOLD_DATE, parent=old, tree=trees[head])
                for old, head in wanted
            ],
        )
        self._squashed.update(zip(wanted, made, strict=True))

    def stack(self, onto: str, changes: Sequence[tuple[str, str, str]], now: datetime) -> int:
        """Foresee `changes` ((old base, head, message) each) stacked one after another on `onto`, as the
        train's joins will stack them, and write the positions in one `git fast-import`; replay() then
        finds them ready. Returns how many were foreseen.

        Only where the three-way merge can be nothing but the union of its two sides: a change that
        touches no file the position ahead changed since the change's old base (nor a file where the
        other side has a directory, or the reverse), with no file deleted on either side (so no rename,
        and no directory rename, for git to detect). The first change that is not such a union, and
        every change behind it, is left to replay()."""
        if not changes:
            return 0
        git = self.git
        olds = list(dict.fromkeys(old for old, _, _ in changes))
        names = [onto, *olds, *(head for _, head, _ in changes)]
        trees = dict(zip(names, git.trees(names), strict=True))
        pairs = [(trees[old], trees[onto]) for old in olds]
        pairs += [(trees[old], trees[head]) for old, head, _ in changes]
        diffs = tree_diffs(git, pairs)
        ahead = dict(zip(olds, diffs, strict=False))  # what each old base lacks of `onto`
        author, committer = git.ident("AUTHOR"), git.ident("COMMITTER")
        stacked: list[TreeEntry] = []  # what the positions foreseen so far change, together
        commits: list[NewCommit] = []
        for (old, _, message), theirs in zip(changes, diffs[len(olds) :], strict=True):
            if not _union_only([*ahead[old], *stacked], theirs):
                break
            parent = len(commits) - 1 if commits else onto
            commits.append(
                NewCommit(
                    {}, message + "\n", now, parent=parent, author=author, committer=committer, entries=theirs
                )
            )
            stacked += theirs
        made = write_commits(git, commits)
        for n, ((old, head, message), commit) in enumerate(zip(changes, made, strict=False)):
            self._ready[(old, head, made[n - 1] if n else onto, message)] = commit
        return len(made)

    def _stands_on(self, old_base: str, base: str) -> bool:
        key = (old_base, base)
        if key not in self._in_history:
            self._in_history[key] = self.git.is_ancestor(old_base, base)
        return self._in_history[key]

    def replay(
        self, *, old_base: str, head: str, onto: str, message: str, base: str | None = None
    ) -> Replayed:
        """`old_base..head` as one commit on `onto`; `base`: a commit `onto` is known to stand on."""
        ready = self._ready.get((old_base, head, onto, message))
        if ready is not None:
            return Replayed(ready)
        git = self.git
        old_tree, onto_tree, head_tree = git.trees([old_base, onto, head])
        if old_tree == onto_tree:  # nothing to merge: the change applies as it is
            return Replayed(_commit(git, head_tree, onto, message))
        squashed = self._squashed.get((old_base, head))
        if squashed is not None and base is not None and self._stands_on(old_base, base):
            ours, theirs = onto, squashed
        else:
            ours, theirs = self._scaffold(old_tree, onto_tree, head_tree)
        if has_merge_tree(git):
            tree, conflicts = _merge_tree(git, ours, theirs)
        else:
            tree, conflicts = _merge_in_scratch(git, ours, theirs, self.scratch)
        return Replayed(_commit(git, tree, onto, message), conflicts)

    def _scaffold(self, old_tree: str, onto_tree: str, head_tree: str) -> tuple[str, str]:
        """Three commits that exist only to make git's merge base the old base's tree: the merge of O
        and T (both children of A) is then exactly "apply A..head onto onto", a cherry-pick of the
        squash. One fast-import writes them (three commit-trees cost twice as much); only their trees
        and parents matter, so their date is fixed."""
        _, o, t = write_commits(
            self.git,
            [
                NewCommit({}, "ralph: replay base", _SCAFFOLD_DATE, tree=old_tree),
                NewCommit({}, "ralph: replay onto", _SCAFFOLD_DATE, parent=0, tree=onto_tree),
                NewCommit({}, "ralph: replay change", _SCAFFOLD_DATE, parent=0, tree=head_tree),
            ],
        )
        return o, t


def _union_only(ours: Sequence[TreeEntry], theirs: Sequence[TreeEntry]) -> bool:
    """Whether merging two sides that changed `ours` and `theirs` from one merge base is their union:
    nothing deleted, no path on both sides, no file on one side where the other has a directory."""
    if any(e.status == "D" for e in (*ours, *theirs)):
        return False
    mine, yours = {e.path for e in ours}, {e.path for e in theirs}
    return not (mine & yours or _directories(mine) & yours or _directories(yours) & mine)


def _directories(paths: set[bytes]) -> set[bytes]:
    return {path[:at] for path in paths for at in range(len(path)) if path[at : at + 1] == b"/"}


def squash(git: Git, *, base: str, head: str, message: str) -> str:
    """`head`'s tree as one commit on `base`."""
    return _commit(git, git.trees([head])[0], base, message)


def _commit(git: Git, tree: str, parent: str | None, message: str) -> str:
    parents = ("-p", parent) if parent else ()
    # --no-gpg-sign: nobody is there to unlock a key, and a waiting pinentry would hang the tick.
    commit = git.run("commit-tree", "--no-gpg-sign", tree, *parents, "-m", message).out
    git.made(commit, tree)  # the position behind replays onto it: its tree need not be asked for
    return commit


def has_merge_tree(git: Git) -> bool:
    """Whether this git has `merge-tree --write-tree` (2.38+)."""
    return not _FORCE_SCRATCH and git.version[:2] >= MERGE_TREE_VERSION


# Tests set this to exercise the fallback older git takes on a git that does not need it.
_FORCE_SCRATCH = False


def _merge_tree(git: Git, ours: str, theirs: str) -> tuple[str, tuple[str, ...]]:
    result = git.run(
        "merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", ours, theirs, ok=(0, 1)
    )
    parts = result.stdout.split("\0")
    conflicts = tuple(dict.fromkeys(p for p in parts[1:] if p)) if result.returncode == 1 else ()
    return parts[0], conflicts


def _merge_in_scratch(git: Git, ours: str, theirs: str, root: Path) -> tuple[str, tuple[str, ...]]:
    """The same merge in a throwaway clone (git older than 2.38); its tree goes back to `git`."""
    control = git.run("rev-parse", "--path-format=absolute", "--git-common-dir").out
    with scratch_dir(root, SCRATCH_PREFIX) as tmp:
        scratch = tmp / "clone"
        git.run("clone", "--quiet", "--shared", "--no-checkout", "--", control, str(scratch))
        here = Git(scratch)
        crashpoint("mid-replay")
        safe = (*UNTRUSTED, "-c", "core.editor=true", "-c", "merge.conflictStyle=merge")
        here.run(*safe, "checkout", "--quiet", "--detach", ours)
        merged = here.run(*safe, "merge", "--quiet", "--no-commit", "--no-ff", theirs, ok=tuple(range(256)))
        conflicts: tuple[str, ...] = ()
        if merged.returncode != 0:
            listed = here.run("diff", "--name-only", "-z", "--diff-filter=U").stdout.split("\0")
            conflicts = tuple(p for p in listed if p)
            _settle_submodules(here)
        here.run(*safe, "add", "--all")
        tree = here.run("write-tree").out
        # The tree's new blobs (the files with markers) are in the scratch clone's object store: a
        # commit of it brings them over.
        here.run("update-ref", "refs/ralph/replayed", _commit(here, tree, None, "ralph: replayed tree"))
        git.run("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(scratch), "refs/ralph/replayed")
    return tree, conflicts


def _settle_submodules(here: Git) -> None:
    """Give each conflicted submodule the commit merge-tree writes for it (the side replayed onto, else
    the side that kept it): `git add` cannot, the submodule is not checked out in a scratch clone."""
    sides: dict[str, dict[str, str]] = {}
    for entry in here.run("ls-files", "--unmerged", "-z").stdout.split("\0"):
        info, _, path = entry.partition("\t")
        mode, sha, stage = info.split() if info else ("", "", "")
        if mode == "160000" and stage in ("2", "3"):  # the base's alone (stage 1) is no side's now
            sides.setdefault(path, {})[stage] = sha
    if sides:
        settled = (f"160000 {by.get('2') or by['3']}\t{path}\0" for path, by in sides.items())
        here.run("update-index", "-z", "--index-info", input="".join(settled))


def markers_left(git: Git, commit: str, paths: tuple[str, ...]) -> list[str]:
    """Which of `paths` still hold a conflict marker line in `commit`."""
    left = []
    for path in paths:
        result = git.run("cat-file", "blob", f"{commit}:{path}", ok=(0, 128))
        if result.returncode == 0 and _MARKER.search(result.data):
            left.append(path)
    return left
