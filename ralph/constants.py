"""Names the command line needs before anything heavy is imported (`ralph --help` should be instant)."""

from __future__ import annotations

RUNNER_NAMES: tuple[str, ...] = ("claude", "codex", "gemini", "opencode", "aider", "command")

# Upper bounds the command line checks before anything heavy is imported.
MAX_WORKERS = 256  # as parallel.workers
MAX_TASKS_PER_TICK = 10_000
MAX_REASON_CHARS = 500  # `ralph pause --reason`; a pause file edited by hand is cut there when shown
MAX_NOTE_CHARS = 2000  # `ralph task done/reject --note`: a line in the task's notes
