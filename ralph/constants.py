"""Names the command line needs before anything heavy is imported (`ralph --help` should be instant)."""

from __future__ import annotations

RUNNER_NAMES: tuple[str, ...] = ("claude", "codex", "gemini", "opencode", "aider", "command")
