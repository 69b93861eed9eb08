"""`.ralph/config.toml`: defaults, a lossless round trip, every documented key, and refusal of bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import ralph

from ralph.config import Config, GitConfig, load_config, render_config
from ralph.errors import ConfigError

# DESIGN §8, verbatim apart from non-default values, so a key the design documents cannot go missing.
DESIGN_SAMPLE = """\
[git]
remote = "upstream"
base_branch = "trunk"         # default: the remote's HEAD branch

[parallel]
workers = 5
workspace_root = "/srv/ralph-workspaces"
max_push_attempts = 7
push_backoff_ms = [100, 200]
terminal_worker_ttl_hours = 12
workspace_retention_hours = 0
tick_budget_s = 30.5
ignored_file_allowlist = [".env.local", "config/*.secret"]

[agent]
runner = "command"            # claude | codex | gemini | opencode | aider | command
model = "opus"                # empty: the runner's own default
command = ["my-agent", "--prompt", "{prompt_file}", "{task_id}", "{workspace}"]
timeout_minutes = 90
max_attempts = 2
max_remediations = 0

[ci]
command = ["make", "check"]   # argv, no shell; [] disables the gate
timeout_minutes = 15
verify_rebased = false

[hooks]
after_create = ["./setup.sh"] # argv run in a new workspace
on_event = ["notify-send", "ralph"]
"""


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.toml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# --- defaults and round trip ---------------------------------------------------------------------


def test_missing_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path / "config.toml")
    assert config == Config()
    assert (config.git.remote, config.git.base_branch) == ("origin", None)
    p = config.parallel
    assert (p.workers, p.workspace_root, p.max_push_attempts) == (3, ".ralph/workspaces", 50)
    assert p.push_backoff_ms == [500, 2000, 5000, 10000]
    assert (p.terminal_worker_ttl_hours, p.workspace_retention_hours, p.tick_budget_s) == (24, 24, 45)
    assert (p.ignored_file_allowlist, p.kill_grace_seconds) == ([], 10)
    a = config.agent
    assert (a.runner, a.model, a.command) == ("claude", "", [])
    assert (a.timeout_minutes, a.max_attempts, a.max_remediations) == (60, 3, 3)
    assert (config.ci.command, config.ci.timeout_minutes, config.ci.verify_rebased) == (
        ["make", "ci"],
        30,
        True,
    )
    assert (config.hooks.after_create, config.hooks.on_event) == ([], [])
    assert (config.queue.id_prefix, config.queue.id_width) == ("RQ", 4)


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_render_then_load_is_the_default_config(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, render_config(Config()))) == Config()


def test_rendered_config_spells_out_every_key() -> None:
    """`ralph init` writes every key (but those unset by default: TOML has no null) so a person can see
    what there is."""
    import tomllib

    rendered = tomllib.loads(render_config(Config()).decode())
    for section, model in Config.model_fields.items():
        fields = model.annotation.model_fields  # type: ignore[union-attr]
        expected = {name for name, info in fields.items() if info.default is not None}
        assert set(rendered[section]) == expected, section
    assert "base_branch" not in rendered["git"]  # None means "ask the remote"


def test_non_default_config_round_trips(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DESIGN_SAMPLE))
    again = load_config(write(tmp_path, render_config(config)))
    assert again == config
    assert again.git.base_branch == "trunk"


def test_every_key_of_the_design_is_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DESIGN_SAMPLE))
    assert config.git == GitConfig(remote="upstream", base_branch="trunk")
    p = config.parallel
    assert (p.workers, p.workspace_root, p.max_push_attempts) == (5, "/srv/ralph-workspaces", 7)
    assert p.push_backoff_ms == [100, 200]
    assert (p.terminal_worker_ttl_hours, p.workspace_retention_hours, p.tick_budget_s) == (12, 0, 30.5)
    assert p.ignored_file_allowlist == [".env.local", "config/*.secret"]
    a = config.agent
    assert (a.runner, a.model) == ("command", "opus")
    assert a.command == ["my-agent", "--prompt", "{prompt_file}", "{task_id}", "{workspace}"]
    assert (a.timeout_minutes, a.max_attempts, a.max_remediations) == (90, 2, 0)
    assert (config.ci.command, config.ci.timeout_minutes, config.ci.verify_rebased) == (
        ["make", "check"],
        15,
        False,
    )
    assert config.hooks.after_create == ["./setup.sh"]
    assert config.hooks.on_event == ["notify-send", "ralph"]


def test_a_partial_section_keeps_the_other_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[parallel]\nworkers = 8\n"))
    assert config.parallel.workers == 8
    assert config.parallel.push_backoff_ms == [500, 2000, 5000, 10000]
    assert config.agent == Config().agent


def test_keys_beyond_the_design_are_accepted(tmp_path: Path) -> None:
    """Keys the code added after DESIGN §8 (runner binary, retry backoff, kill grace, hook timeout, ids)."""
    text = """\
[parallel]
kill_grace_seconds = 2.5
[agent]
binary = "/opt/claude"
extra_args = ["--verbose"]
retry_backoff_minutes = [1, 2]
[hooks]
timeout_seconds = 60
[queue]
id_prefix = "TK"
id_width = 3
"""
    config = load_config(write(tmp_path, text))
    assert config.parallel.kill_grace_seconds == 2.5
    assert (config.agent.binary, config.agent.extra_args) == ("/opt/claude", ["--verbose"])
    assert config.agent.retry_backoff_minutes == [1, 2]
    assert config.hooks.timeout_seconds == 60
    assert (config.queue.id_prefix, config.queue.id_width) == ("TK", 3)


def test_empty_ci_command_disables_the_gate(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "[ci]\ncommand = []\n")).ci.command == []


def test_whole_numbers_are_accepted_for_durations(tmp_path: Path) -> None:
    """TOML writes 90 and 90.0 differently; both are a sensible number of minutes."""
    config = load_config(write(tmp_path, "[agent]\ntimeout_minutes = 90\n[ci]\ntimeout_minutes = 2.5\n"))
    assert (config.agent.timeout_minutes, config.ci.timeout_minutes) == (90.0, 2.5)


# --- bad input -----------------------------------------------------------------------------------

# (file content, fragments the message must contain after "<path>: ")
BAD_CONFIGS: dict[str, tuple[str | bytes, list[str]]] = {
    "TOML syntax error": ("[parallel]\nworkers = \n", ["not valid TOML", "line 2", "fix the syntax"]),
    "unclosed table header": ("[git\nremote = 'x'\n", ["not valid TOML", "line 1"]),
    "duplicate key": ("[parallel]\nworkers = 2\nworkers = 3\n", ["not valid TOML", "line 3"]),
    "not UTF-8": (b"[agent]\nmodel = 'caf\xe9'\n", ["not UTF-8 (byte 20)", "save it as UTF-8"]),
    "unknown section": (
        "[paralel]\nworkers = 2\n",
        ["paralel: unknown key (a typo?)", "[parallel]", "[agent]"],
    ),
    "unknown key": (
        "[parallel]\nwokers = 2\n",
        ["parallel.wokers: unknown key (a typo?)", "the keys of [parallel] are: workers, workspace_root"],
    ),
    "unknown top-level key": ("workers = 2\n", ["workers: unknown key (a typo?)", "the sections are: [git]"]),
    "section given as a value": ("parallel = 3\n", ["parallel: must be a table, written [parallel] (got 3)"]),
    "workers is a string": ('[parallel]\nworkers = "3"\n', ["parallel.workers:", "valid integer", "got '3'"]),
    "workers is a float": ("[parallel]\nworkers = 3.0\n", ["parallel.workers:", "valid integer", "got 3.0"]),
    "workers is a bool": ("[parallel]\nworkers = true\n", ["parallel.workers:", "valid integer", "got True"]),
    "workers = 0": (
        "[parallel]\nworkers = 0\n",
        ["parallel.workers:", "greater than or equal to 1", "got 0"],
    ),
    "max_push_attempts = 0": (
        "[parallel]\nmax_push_attempts = 0\n",
        ["parallel.max_push_attempts:", "got 0"],
    ),
    "empty push_backoff_ms": (
        "[parallel]\npush_backoff_ms = []\n",
        ["parallel.push_backoff_ms:", "at least 1 item"],
    ),
    "negative backoff": (
        "[parallel]\npush_backoff_ms = [500, -1]\n",
        ["parallel.push_backoff_ms[1]:", "got -1"],
    ),
    "unknown runner": (
        '[agent]\nrunner = "unknown"\n',
        ["agent.runner:", "'claude', 'codex'", "got 'unknown'"],
    ),
    "command runner without command": (
        '[agent]\nrunner = "command"\n',
        ['agent: runner = "command" needs agent.command, an argv list'],
    ),
    "command as a shell string": (
        '[ci]\ncommand = "make ci"\n',
        ["ci.command:", "valid list", "got 'make ci'"],
    ),
    "empty argv word": ('[ci]\ncommand = ["make", ""]\n', ["ci.command[1]:", "at least 1 character"]),
    "NUL in argv": ('[hooks]\nafter_create = ["a\\u0000b"]\n', ["hooks.after_create[0]:", "NUL character"]),
    "NUL in workspace_root": (
        '[parallel]\nworkspace_root = "a\\u0000b"\n',
        ["parallel.workspace_root:", "NUL"],
    ),
    "base_branch starts with -": (
        '[git]\nbase_branch = "-x"\n',
        ["git.base_branch: '-x' is not a valid git branch name"],
    ),
    "base_branch with ..": (
        '[git]\nbase_branch = "a..b"\n',
        ["git.base_branch: 'a..b' is not a valid git branch"],
    ),
    "base_branch with a space": (
        '[git]\nbase_branch = "has space"\n',
        ["git.base_branch: 'has space' is not"],
    ),
    "empty base_branch": (
        '[git]\nbase_branch = ""\n',
        ["git.base_branch: '' is not a valid git branch name"],
    ),
    "bad remote": (
        '[git]\nremote = "--upload-pack=x"\n',
        ["git.remote: '--upload-pack=x' is not a valid git remote"],
    ),
    "negative timeout": (
        "[agent]\ntimeout_minutes = -1\n",
        ["agent.timeout_minutes:", "greater than 0", "got -1"],
    ),
    "zero CI timeout": ("[ci]\ntimeout_minutes = 0\n", ["ci.timeout_minutes:", "greater than 0"]),
    "infinite timeout": ("[agent]\ntimeout_minutes = inf\n", ["agent.timeout_minutes:", "finite number"]),
    "NaN tick budget": ("[parallel]\ntick_budget_s = nan\n", ["parallel.tick_budget_s:", "finite number"]),
    "kill grace of zero": (
        "[parallel]\nkill_grace_seconds = 0\n",
        ["parallel.kill_grace_seconds:", "greater than 0"],
    ),
    "TTL past year 9999": (
        "[parallel]\nterminal_worker_ttl_hours = 1e12\n",
        ["parallel.terminal_worker_ttl_hours:"],
    ),
    "bad id prefix": ('[queue]\nid_prefix = "R-Q"\n', ["queue.id_prefix:", "got 'R-Q'"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_refused_with_one_clear_line(tmp_path: Path, case: str) -> None:
    """ConfigError starting with the file's path, naming the dotted key and the problem; file untouched."""
    text, fragments = BAD_CONFIGS[case]
    path = write(tmp_path, text)
    before = path.read_bytes()
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message
    assert "Value error," not in message
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[agent\nrunner = 'claude'\n", "not valid TOML"),
        ("[parallel]\nworkers = 0\n", "parallel.workers"),
        ("[agent]\nrunnr = 'claude'\n", "agent.runnr"),
    ],
    ids=["syntax", "range", "typo"],
)
def test_a_bad_config_is_exit_1_one_line_naming_the_file(repo: Path, text: str, problem: str) -> None:
    """A bad config is the user's to fix (exit 1, one line), not a bug (exit 3, a traceback)."""
    config = repo / ".ralph" / "config.toml"
    config.parent.mkdir()
    config.write_text(text)
    result = ralph(repo, "status")
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"ralph: error: {config}: ")
    assert problem in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert config.read_text() == text


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").mkdir()
    with pytest.raises(ConfigError, match=r"config.toml: cannot read: Is a directory$"):
        load_config(tmp_path / "config.toml")


def test_command_runner_with_a_command_is_accepted(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[agent]\nrunner = "command"\ncommand = ["my-agent", "{prompt_file}"]\n')
    )
    assert config.agent.command == ["my-agent", "{prompt_file}"]


# --- branch names agree with git -----------------------------------------------------------------

BRANCH_NAMES = [
    "main",
    "trunk",
    "feature/x",
    "release-1.0",
    "a/b/c",
    "ünïcode",
    "x@",
    "@x",
    "a/b.lock.x",
    "a..b",
    "has space",
    "tab\there",
    ".hidden",
    "a/.b",
    "/main",
    "main/",
    "a//b",
    "main.",
    "main.lock",
    "a.lock/b",
    "a@{b",
    "a~b",
    "a^b",
    "a:b",
    "a?b",
    "a*b",
    "a[b",
    "a\\b",
    "del\x7f",
    "HEAD",
    "@",
    "-x",
]


def git_accepts_branch(name: str) -> bool:
    """git's own verdict. `--branch` refuses HEAD and a leading '-'; '@' it expands, so ralph refuses it."""
    result = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True)
    return result.returncode == 0 and name != "@"


@pytest.mark.parametrize("name", BRANCH_NAMES)
def test_base_branch_validation_agrees_with_git(name: str) -> None:
    """A branch name git would refuse is refused at load time, and one git accepts is not."""
    try:
        GitConfig(base_branch=name)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == git_accepts_branch(name)


# --- bounded input -------------------------------------------------------------------------------


def test_a_deeply_nested_array_is_refused_in_one_line(tmp_path: Path) -> None:
    """tomllib recurses once per level: 3,000 levels would be a RecursionError (a bug, exit 3)."""
    path = write(tmp_path, "[agent]\nextra_args = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: nested more than 64 levels deep (line 2); flatten it"


def test_brackets_inside_strings_and_comments_do_not_count(tmp_path: Path) -> None:
    text = '[agent]\nmodel = "' + "[" * 100 + '"  # ' + "{" * 100
    text += "\nextra_args = ['''" + "[" * 100 + "''']\n"
    assert load_config(write(tmp_path, text)).agent.model == "[" * 100


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[parallel]\nworkers = 1000000000\n", "parallel.workers"),
        ("[agent]\nmax_remediations = 1000000000\n", "agent.max_remediations"),
        ("[agent]\nmax_attempts = 1000000000\n", "agent.max_attempts"),
        ("[parallel]\nmax_push_attempts = 1000000000\n", "parallel.max_push_attempts"),
        ("[ci]\nmax_parallel = 100000\n", "ci.max_parallel"),
    ],
)
def test_numbers_have_upper_bounds(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: {key}: Input should be less than or equal to ")


def test_a_huge_config_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="over the 1048576-byte limit"):
        load_config(path)
