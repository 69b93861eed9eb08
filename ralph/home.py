"""A job's private HOME: the only home directory an agent, its hooks or a CI gate ever sees.

The user's real configuration directories are never bound into a box, writable or not: an injected
agent must not plant settings or hooks there that run later outside the box. What a CLI needs to
log in (each preset names its files; sandbox.home_files adds more) is copied in; settings ralph
writes for a preset go into the copy only. A gate's HOME is made anew for every run, so nothing an
agent left in its own HOME (a sitecustomize, a git config) can reach the judge of its work.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from shutil import copyfile
from typing import Any

import tomli_w

from ralph.files import force_rmtree
from ralph.nesting import check_depth, loads_json

logger = logging.getLogger(__name__)

# A credential file is small; anything larger is not what a preset means.
MAX_COPIED_BYTES = 16 * 1024 * 1024


def make_home(home: Path, *, real_home: Path, files: Iterable[str], identity: Mapping[str, str]) -> list[str]:
    """Make `home` anew (mode 0700) with `files` copied from `real_home` (mode 0600) and a git identity.

    Returns the files copied. A file that is missing is skipped quietly (a preset names every file its
    CLI may use); one that is not a regular file, too large, or outside `real_home` is skipped with a
    warning.
    """
    if home.is_symlink():
        home.unlink()
    elif home.exists():
        force_rmtree(home)
    home.mkdir(mode=0o700, parents=True)
    copied = []
    for rel in dict.fromkeys(files):
        problem = _problem(rel)
        if problem:
            logger.warning("sandbox.home_files: not copying %r: %s", rel, problem)
            continue
        src = real_home / rel
        try:
            st = src.stat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_COPIED_BYTES:
            logger.warning("sandbox.home_files: not copying %s: not a regular file of at most 16 MiB", src)
            continue
        dst = home / rel
        dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        copyfile(src, dst)
        os.chmod(dst, 0o600)
        copied.append(rel)
    _write_gitconfig(home, identity)
    return copied


def _problem(rel: str) -> str | None:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or rel.startswith("~"):
        return "paths are relative to the home directory"
    if ".." in pure.parts or not pure.parts:
        return "it must name a file inside the home directory"
    return None


def _write_gitconfig(home: Path, identity: Mapping[str, str]) -> None:
    """The agent commits as ralph does (the control checkout's identity), and never waits on a key."""
    name = identity.get("GIT_AUTHOR_NAME", "")
    email = identity.get("GIT_AUTHOR_EMAIL", "")
    lines = ["[commit]", "\tgpgsign = false", "[tag]", "\tgpgsign = false"]
    if name and email:
        lines = ["[user]", f"\tname = {_quote(name)}", f"\temail = {_quote(email)}", *lines]
    path = home / ".gitconfig"
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o600)


def _quote(value: str) -> str:
    """A git config value in double quotes (a name may hold `#`, `;` or a backslash)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- pointing a CLI at its model -------------------------------------------------------------------------

PROVIDER = "ralph"  # the provider ralph adds to a CLI's settings in the job's HOME


def point_at_endpoint(
    home: Path, *, runner: str, base_url: str, key_name: str, key: str | None, model: str
) -> dict[str, str]:
    """Write what `runner`'s CLI needs into the job's private `home` to reach `base_url` (the API root,
    no /v1) with the key in `key_name`; return the variables to set for it. Nothing is written for a
    runner that needs only variables, and no file of the user's own is touched (these are copies)."""
    env: dict[str, str] = {}
    v1 = base_url.rstrip("/") + "/v1" if base_url else ""
    if runner == "claude":
        env |= {"ANTHROPIC_BASE_URL": base_url.rstrip("/")} if base_url else {}
        env |= {"ANTHROPIC_API_KEY": key} if key is not None else {}
    elif runner == "codex" and base_url:
        path = home / ".codex" / "config.toml"
        settings = _read_toml(path)
        settings["model_provider"] = PROVIDER
        if model:
            settings["model"] = model
        providers = settings.setdefault("model_providers", {})
        providers[PROVIDER] = {"name": PROVIDER, "base_url": v1, "wire_api": "responses"}
        if key_name:
            providers[PROVIDER]["env_key"] = key_name
        _write(path, tomli_w.dumps(settings))
    elif runner == "gemini":
        env |= {"GOOGLE_GEMINI_BASE_URL": base_url.rstrip("/")} if base_url else {}
        env |= {"GEMINI_API_KEY": key} if key is not None else {}
        path = home / ".gemini" / "settings.json"
        settings = _read_json(path)
        auth = settings.setdefault("security", {}).setdefault("auth", {})
        # Without an auth type headless gemini exits 41; an API key (ours, or the user's GEMINI_API_KEY)
        # is the one a job can use.
        if "selectedType" not in auth:
            auth["selectedType"] = "gemini-api-key"
            _write(path, json.dumps(settings, indent=2) + "\n")
    elif runner == "opencode" and base_url:
        path = home / ".config" / "opencode" / "opencode.json"
        settings = _read_json(path)
        options: dict[str, str] = {"baseURL": v1}
        if key_name:
            options["apiKey"] = "{env:" + key_name + "}"
        name = model or "default"
        settings.setdefault("provider", {})[PROVIDER] = {
            "npm": "@ai-sdk/openai-compatible",
            "name": PROVIDER,
            "options": options,
            "models": {name: {"name": name}},
        }
        settings["model"] = f"{PROVIDER}/{name}"
        _write(path, json.dumps(settings, indent=2) + "\n")
    elif runner == "aider":
        env |= {"OPENAI_API_BASE": v1} if base_url else {}
        env |= {"OPENAI_API_KEY": key} if key is not None else {}
    return env


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
        check_depth(text, toml=True)
        return tomllib.loads(text)
    except (OSError, ValueError):
        return {}  # none copied, or one we cannot read: ours alone


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = loads_json(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def keep_from_aider(home: Path, patterns: Iterable[str], repository_own: bytes | None) -> dict[str, str]:
    """aider adds every tracked file its message names to its chat, editable, and under --yes-always it
    never asks: ralph's prompt names the gate's program and ralph's own files, which a task may not
    change (README "Security model"), so they would come back as a protected-path refusal and a lost
    attempt. They go into an ignore file in the job's HOME that aider reads instead of the repository's
    .aiderignore, whose lines come first. Returns the variable that points aider at it."""
    own = repository_own.decode(errors="replace").rstrip("\n") if repository_own else ""
    lines = [own] if own else []
    lines += ["# ralph: paths a task may not change", *patterns]
    path = home / ".aiderignore"
    _write(path, "\n".join(lines) + "\n")
    return {"AIDER_AIDERIGNORE": str(path)}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, 0o600)
