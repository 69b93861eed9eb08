"""A job's private HOME: what is copied into it, what ralph writes there, and what it never touches."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest

from ralph.home import make_home, point_at_endpoint

IDENTITY = {"GIT_AUTHOR_NAME": 'Ralph "Bot"', "GIT_AUTHOR_EMAIL": "ralph@example.com"}


@pytest.fixture
def real_home(tmp_path: Path) -> Path:
    home = tmp_path / "real"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "auth.json").write_text('{"token": "t"}')
    (home / ".codex" / "config.toml").write_text('model = "o4"\n[profiles.fast]\nmodel = "o4-mini"\n')
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY")
    (home / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(home / "fifo")
    return home


def test_make_home_copies_the_named_files_private_and_nothing_else(real_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "job-home"
    copied = make_home(
        home,
        real_home=real_home,
        files=[".codex/auth.json", ".codex/config.toml", ".claude.json", "fifo", "../real/.ssh/id_ed25519"],
        identity=IDENTITY,
    )
    assert copied == [".codex/auth.json", ".codex/config.toml"]  # a missing file, a FIFO, '..' skipped
    assert (home / ".codex" / "auth.json").read_text() == '{"token": "t"}'
    assert not (home / ".ssh").exists()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / ".codex" / "auth.json").stat().st_mode) == 0o600
    gitconfig = (home / ".gitconfig").read_text()
    assert '\tname = "Ralph \\"Bot\\""' in gitconfig and '\temail = "ralph@example.com"' in gitconfig
    assert "gpgsign = false" in gitconfig


def test_make_home_starts_over_every_time(real_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "job-home"
    make_home(home, real_home=real_home, files=[], identity=IDENTITY)
    (home / ".local" / "lib").mkdir(parents=True)
    (home / ".local" / "lib" / "sitecustomize.py").write_text("planted by an agent")
    make_home(home, real_home=real_home, files=[], identity=IDENTITY)
    assert sorted(p.name for p in home.iterdir()) == [".gitconfig"]


def test_codex_gets_a_provider_in_its_copy_never_in_the_users_file(real_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "job-home"
    make_home(home, real_home=real_home, files=[".codex/config.toml"], identity=IDENTITY)
    before = (real_home / ".codex" / "config.toml").read_bytes()
    env = point_at_endpoint(
        home, runner="codex", base_url="http://127.0.0.1:9/", key_name="GATEWAY_KEY", key="k", model="gpt-5.5"
    )
    assert env == {}  # the key travels under its own name, which the provider names
    settings = tomllib.loads((home / ".codex" / "config.toml").read_text())
    assert settings["model_provider"] == "ralph"
    assert settings["model"] == "gpt-5.5"
    assert settings["model_providers"]["ralph"] == {
        "name": "ralph",
        "base_url": "http://127.0.0.1:9/v1",
        "wire_api": "responses",
        "env_key": "GATEWAY_KEY",
    }
    assert settings["profiles"] == {"fast": {"model": "o4-mini"}}  # the user's own settings kept
    assert (real_home / ".codex" / "config.toml").read_bytes() == before


def test_gemini_gets_its_auth_type_and_the_endpoint(tmp_path: Path) -> None:
    home = tmp_path / "job-home"
    home.mkdir()
    env = point_at_endpoint(
        home, runner="gemini", base_url="http://gw:8080", key_name="K", key="secret", model=""
    )
    assert env == {"GOOGLE_GEMINI_BASE_URL": "http://gw:8080", "GEMINI_API_KEY": "secret"}
    settings = json.loads((home / ".gemini" / "settings.json").read_text())
    assert settings == {"security": {"auth": {"selectedType": "gemini-api-key"}}}


def test_a_users_own_gemini_auth_type_is_kept(tmp_path: Path) -> None:
    home = tmp_path / "job-home"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(
        '{"security": {"auth": {"selectedType": "oauth-personal"}}}'
    )
    point_at_endpoint(home, runner="gemini", base_url="", key_name="", key=None, model="")
    assert json.loads((home / ".gemini" / "settings.json").read_text())["security"]["auth"] == {
        "selectedType": "oauth-personal"
    }


def test_opencode_gets_an_openai_compatible_provider(tmp_path: Path) -> None:
    home = tmp_path / "job-home"
    home.mkdir()
    point_at_endpoint(home, runner="opencode", base_url="http://gw", key_name="GW_KEY", key="x", model="big")
    settings = json.loads((home / ".config" / "opencode" / "opencode.json").read_text())
    assert settings["model"] == "ralph/big"
    assert settings["provider"]["ralph"]["npm"] == "@ai-sdk/openai-compatible"
    assert settings["provider"]["ralph"]["options"] == {"baseURL": "http://gw/v1", "apiKey": "{env:GW_KEY}"}


@pytest.mark.parametrize(
    ("runner", "expected"),
    [
        ("claude", {"ANTHROPIC_BASE_URL": "http://gw", "ANTHROPIC_API_KEY": "x"}),
        ("aider", {"OPENAI_API_BASE": "http://gw/v1", "OPENAI_API_KEY": "x"}),
    ],
)
def test_variables_only_runners(tmp_path: Path, runner: str, expected: dict[str, str]) -> None:
    home = tmp_path / "job-home"
    home.mkdir()
    assert (
        point_at_endpoint(home, runner=runner, base_url="http://gw/", key_name="K", key="x", model="")
        == expected
    )
    assert list(home.iterdir()) == []
