"""Where everything lives, and the task-id check that runs before an id touches a path or a ref."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ralph.errors import PreflightError, QueueError, TaskIdError

RALPH_DIR = ".ralph"
DEFAULT_WORKSPACE_ROOT = ".ralph/workspaces"
CACHE_IGNORE = ".ralph/cache/"

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_ID_LENGTH = 64


def check_task_id(task_id: str) -> str:
    """Return `task_id` if it is safe in a path, a git ref name and a log line; raise TaskIdError if not."""
    problem = _task_id_problem(task_id)
    if problem:
        shown = repr(task_id)
        if len(shown) > 80:  # one line in a log, even for a pasted paragraph
            shown = shown[:72] + "...'"
        raise TaskIdError(f"task id {shown} is not allowed: {problem}; task ids look like RQ-0001")
    return task_id


# What every ordinary id (RQ-0001) looks like: one regex decides it, without the checks below, which
# only explain what is wrong with an id that fails it. A 10,000-task queue checks ~24,000 ids.
_PLAIN_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.))*(?<![.])(?<!\.lock)")


def _task_id_problem(task_id: str) -> str | None:
    if isinstance(task_id, str) and len(task_id) <= MAX_ID_LENGTH and _PLAIN_ID.fullmatch(task_id):
        return None
    if not isinstance(task_id, str):
        return f"it is not a string but {type(task_id).__name__}"
    if not task_id:
        return "it is empty"
    if "\0" in task_id:
        return "it contains a NUL byte"
    if any(unicodedata.category(c).startswith("C") for c in task_id):
        return "it contains a control character"
    if task_id.startswith("-"):
        return "it starts with '-' and would be read as an option"
    if "/" in task_id or "\\" in task_id:
        return "it contains a path separator"
    if ".." in task_id:
        return "it contains '..'"
    if task_id.startswith("."):
        return "it starts with '.'"
    if task_id.endswith(".lock"):
        return "it ends with '.lock', which git refuses in ref names"
    if task_id.endswith("."):
        # refs/ralph/claims/<id> and refs/ralph/attic/<id>-<n> name it; git refuses a ref ending in '.'.
        return "it ends with '.', which git refuses in ref names"
    if len(task_id) > MAX_ID_LENGTH:
        return f"it is longer than {MAX_ID_LENGTH} characters"
    if not _SAFE_ID.fullmatch(task_id):
        bad = next(c for c in task_id if not (c.isascii() and (c.isalnum() or c in "._-")))
        return f"it contains {bad!r}; only letters, digits, '.', '_' and '-' are allowed"
    return None


def is_within(path: Path, root: Path) -> bool:
    """Whether `path`, symlinks resolved, is `root` or below it."""
    return path.resolve().is_relative_to(root.resolve())


@dataclass(frozen=True)
class Paths:
    """The files of one control checkout (DESIGN §2)."""

    root: Path
    workspace_root: Path
    # queue.file and queue.done_file from the config (relative to the root); None: the usual names.
    queue_path: str | None = None
    done_path: str | None = None

    @classmethod
    def for_root(
        cls,
        root: Path,
        workspace_root: str = DEFAULT_WORKSPACE_ROOT,
        *,
        queue_file: str | None = None,
        done_file: str | None = None,
    ) -> Paths:
        ws = Path(workspace_root).expanduser()
        return cls(
            root=root,
            workspace_root=ws if ws.is_absolute() else root / ws,
            queue_path=queue_file,
            done_path=done_file,
        )

    @property
    def ralph_dir(self) -> Path:
        return self.root / RALPH_DIR

    @property
    def config(self) -> Path:
        return self.ralph_dir / "config.toml"

    @property
    def gitignore(self) -> Path:
        return self.root / ".gitignore"

    @property
    def cache(self) -> Path:
        return self.ralph_dir / "cache"

    @property
    def scratch(self) -> Path:
        """Scratch directories of ralph's own (a git directory, an index, a clone), swept by repair."""
        return self.cache / "tmp"

    @property
    def parallel(self) -> Path:
        return self.cache / "parallel"

    @property
    def state(self) -> Path:
        return self.parallel / "state.json"

    @property
    def lock(self) -> Path:
        return self.parallel / "state.json.lock"

    @property
    def events(self) -> Path:
        return self.parallel / "events.jsonl"

    @property
    def pause(self) -> Path:
        return self.parallel / "paused"

    @property
    def runs(self) -> Path:
        return self.parallel / "runs"

    def run_dir(self, task_id: str) -> Path:
        return self.runs / check_task_id(task_id)

    def workspace(self, task_id: str) -> Path:
        return self.workspace_root / check_task_id(task_id)

    def queue_file(self) -> Path:
        return self.root / self.queue_path if self.queue_path else self._json_or_jsonc("queue")

    def done_file(self) -> Path:
        return self.root / self.done_path if self.done_path else self._json_or_jsonc("done")

    def queue_names(self) -> tuple[str, ...]:
        """Where the queue may be, relative to the root: the configured file, else either usual name."""
        return (
            (self.queue_path,) if self.queue_path else (f"{RALPH_DIR}/queue.json", f"{RALPH_DIR}/queue.jsonc")
        )

    def done_names(self) -> tuple[str, ...]:
        return (self.done_path,) if self.done_path else (f"{RALPH_DIR}/done.json", f"{RALPH_DIR}/done.jsonc")

    @property
    def rust_config(self) -> Path:
        """The Rust ralph's configuration, read when config.toml does not exist."""
        return self.ralph_dir / "config.jsonc"

    @property
    def rust_lock(self) -> Path:
        """The Rust ralph's queue lock: a directory, held while its coordinator runs."""
        return self.ralph_dir / "lock"

    def is_initialised(self) -> bool:
        """Whether `ralph init` (or the Rust ralph) set this checkout up: a config or a queue file exists."""
        candidates = [self.config, self.rust_config, *(self.root / n for n in self.queue_names())]
        return any(p.exists() for p in candidates)

    def require_initialised(self) -> None:
        if not self.is_initialised():
            raise PreflightError(
                f"{self.root} is not set up for ralph (no .ralph/config.toml and no queue file): "
                "run `ralph init` there, commit and push what it creates"
            )

    def _json_or_jsonc(self, stem: str) -> Path:
        """`<stem>.json`, or the Rust ralph's `<stem>.jsonc` when only that one exists."""
        plain = self.ralph_dir / f"{stem}.json"
        jsonc = self.ralph_dir / f"{stem}.jsonc"
        if plain.exists() and jsonc.exists():
            raise QueueError(
                f"both {plain} and {jsonc} exist; "
                "keep one of them (ralph reads either, and writes plain JSON)"
            )
        return jsonc if jsonc.exists() else plain

    def relative(self, path: Path) -> str:
        """`path` relative to the repository root, for messages and git pathspecs."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)
