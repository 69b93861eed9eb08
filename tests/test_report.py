"""The status page, rendered from a real run (three landed, one failed, one blocked, one in flight),
opened in a real headless Chromium: the task ids, the graph and the timeline are there, and the page
makes no network request. And report.html_path: the page a tick rewrites."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import chromium
from harness import Project, make_project
from helpers import ralph

from ralph.state import Lifecycle, State

BLOCK = "scripted-agent: write .ralph/cache/followups/{id}.json this is not a proposal"


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, dict[str, str]]]:
    """A real run: RQ-0001..3 landed (RQ-0002 after RQ-0001), RQ-0004 failed, RQ-0005 blocked on an
    invalid follow-up proposal, RQ-0006 in flight (its agent hangs) and RQ-0007 waiting on it."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("home")
    for key, value in {
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Committer",
        "GIT_COMMITTER_EMAIL": "committer@example.com",
        "GIT_ALLOW_PROTOCOL": "file",
    }.items():
        mp.setenv(key, value)
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n")
    base = tmp_path_factory.mktemp("night")
    from conftest import git

    origin = base / "origin.git"
    git(base, "init", "-q", "--bare", "-b", "main", str(origin))
    seed = base / "seed"
    git(base, "clone", "-q", str(origin), str(seed))
    (seed / "README.md").write_text("hello\n")
    git(seed, "add", "README.md")
    git(seed, "commit", "-q", "-m", "initial commit")
    git(seed, "push", "-q", "origin", "HEAD:main")
    control = base / "control"
    git(base, "clone", "-q", str(origin), str(control))
    project = make_project(origin, control, agent={"max_attempts": 1}, parallel={"workers": 6})
    ids = {
        "first": project.add("Add a greeting"),
        "second": "",
        "third": project.add("Document <b>everything</b> & more"),
        "failed": project.add("Break the build", "scripted-agent: fail"),
        "blocked": "",
        "flying": project.add("Think for a long time", "scripted-agent: hang"),
    }
    ids["second"] = project.add("Add a farewell", depends_on=[ids["first"]])
    ids["blocked"] = project.add(
        "Propose follow-ups badly", "scripted-agent: write blocked.txt hi\n" + BLOCK.format(id="RQ-0006")
    )
    ids["waiting"] = project.add("After the long one", depends_on=[ids["flying"]])

    def settled(state: State) -> bool:
        by = state.by_task()
        want = {
            ids["first"]: Lifecycle.COMPLETED,
            ids["second"]: Lifecycle.COMPLETED,
            ids["third"]: Lifecycle.COMPLETED,
            ids["failed"]: Lifecycle.FAILED,
            ids["blocked"]: Lifecycle.BLOCKED_PUSH,
            ids["flying"]: Lifecycle.RUNNING,
        }
        return all(k in by and by[k].lifecycle is v for k, v in want.items())

    try:
        project.run_until(settled, timeout=120)
        yield project, ids
    finally:
        ralph(project.control, "cancel", ids["flying"])
        mp.undo()


def test_the_page_from_a_real_run(night: tuple[Project, dict[str, str]], tmp_path: Path) -> None:
    project, ids = night
    assert ids["blocked"] == "RQ-0006"  # the id the follow-up directive names
    page = tmp_path / "status.html"
    result = ralph(project.control, "report", "--html", str(page))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(page)
    html = page.read_text()
    # Self-contained: nothing that could fetch, and a policy that forbids it anyway.
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(http|src=", html, re.I)
    assert "default-src 'none'" in html and '<meta http-equiv="refresh" content="60">' in html
    # A task's markup is text on the page, never markup.
    assert "Document &lt;b&gt;everything&lt;/b&gt; &amp; more" in html and "<b>everything" not in html
    for status, key in [
        ("landed", "first"),
        ("failed", "failed"),
        ("blocked", "blocked"),
        ("in_flight", "flying"),
    ]:
        assert f'<g class="node {status}" data-task="{ids[key]}"' in html, status
    assert f'<g class="node waiting" data-task="{ids["waiting"]}"' in html
    assert f'data-from="{ids["first"]}" data-to="{ids["second"]}"' in html
    assert f'<g class="lane" data-task="{ids["flying"]}" data-outcome="in_flight">' in html
    assert 'class="phase gate"' in html and 'class="phase agent open"' in html
    assert "main: 3 landed in 24h, 1 in flight, 1 blocked, 1 failed" in html


def test_the_page_in_a_real_browser(night: tuple[Project, dict[str, str]], tmp_path: Path) -> None:
    project, ids = night
    page = tmp_path / "status.html"
    assert ralph(project.control, "report", "--html", str(page)).exit_code == 0
    with chromium() as browser:
        url = page.as_uri()
        browser.open(url)
        seen = browser.run(
            """
            const ids = sel => [...document.querySelectorAll(sel)].map(e => e.getAttribute('data-task'));
            const box = document.querySelector('#graph').getBoundingClientRect();
            return {
              title: document.title,
              summary: document.querySelector('#summary').textContent,
              nodes: ids('#graph .node'),
              landed: ids('#graph .node.landed'),
              edges: document.querySelectorAll('#graph path.edge').length,
              lanes: ids('#timeline .lane'),
              bars: document.querySelectorAll('#timeline rect.phase').length,
              history: [...document.querySelectorAll('#history tbody tr')].map(r => r.cells[1].textContent),
              graphSize: [box.width, box.height],
              scripts: document.scripts.length,
            };
            """
        )
        shot = browser.screenshot(tmp_path / "status.png")
        requests = browser.requests()
    assert seen["title"].startswith("ralph · control · main")
    assert seen["summary"].startswith("main: 3 landed in 24h, 1 in flight, 1 blocked, 1 failed")
    everyone = {ids[k] for k in ("first", "second", "third", "failed", "blocked", "flying", "waiting")}
    assert set(seen["nodes"]) == everyone
    assert set(seen["landed"]) == {ids["first"], ids["second"], ids["third"]}
    assert seen["edges"] == 2
    assert set(seen["lanes"]) == everyone - {ids["waiting"]}
    assert seen["bars"] >= 6 * 2  # every task ran an agent, and most a gate after it
    assert set(seen["history"]) == everyone - {ids["waiting"]}
    assert seen["graphSize"][0] > 100 and seen["graphSize"][1] > 100  # laid out, not collapsed
    assert seen["scripts"] == 0
    # The only request the page made is the page itself.
    assert requests and all(r == url for r in requests), requests
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def set_html_path(config: Path, value: str) -> None:
    text = config.read_text()
    assert 'html_path = ""' in text
    config.write_text(text.replace('html_path = ""', f"html_path = {value!r}"))


def test_a_tick_that_changed_something_rewrites_report_html_path(project: Project) -> None:
    config = project.control / ".ralph" / "config.toml"
    set_html_path(config, ".ralph/cache/www/index.html")
    page = project.control / ".ralph" / "cache" / "www" / "index.html"
    assert ralph(project.control, "run", "--allow-root").exit_code == 0
    assert page.exists()  # the first tick writes it, even with nothing to do
    assert stat.S_IMODE(page.stat().st_mode) == 0o644
    first = page.stat().st_mtime_ns
    assert ralph(project.control, "run", "--allow-root").exit_code == 0
    assert page.stat().st_mtime_ns == first  # nothing changed, nothing rewritten
    task = project.add("Add a greeting")
    assert ralph(project.control, "run", "--allow-root").exit_code == 0  # starts the task
    assert page.stat().st_mtime_ns != first
    assert f'data-task="{task}"' in page.read_text()
    project.wait_for_jobs()


def test_a_page_that_cannot_be_written_is_a_warning_not_a_failed_tick(project: Project) -> None:
    blocker = project.control / ".ralph" / "cache" / "not-a-dir"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the page's directory should be")
    config = project.control / ".ralph" / "config.toml"
    set_html_path(config, ".ralph/cache/not-a-dir/index.html")
    result = ralph(project.control, "run", "--allow-root")
    assert result.exit_code == 0, result.output
    assert "could not rewrite the status page" in result.stderr


def test_report_to_stdout(project: Project) -> None:
    result = ralph(project.control, "report", "--html", "-", "--since", "all")
    assert result.exit_code == 0
    assert result.stdout.startswith("<!DOCTYPE html>") and result.stdout.endswith("</html>\n")
    assert '<p class="note" id="graph">The queue is empty.</p>' in result.stdout
    assert os.path.exists(project.control)
