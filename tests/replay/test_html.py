"""replay html: a self-contained, escaped page whose token spans carry advantage colours, and
that headless Chromium renders."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import pytest

from creditgym.replay.cli import main
from creditgym.replay.html import render_html
from creditgym.replay.io import write_trajectories
from creditgym.replay.rescore import rescore_trajectories


@pytest.fixture()
def scored(trajectories):
    return rescore_trajectories(trajectories, credit="grpo").trajectories


def test_page_is_self_contained_and_escaped(scored):
    scored[0].observations[0] = scored[0].observations[0] + "<script>alert(1)</script>"
    page = render_html(scored)
    assert "<information>" not in page and "&lt;information&gt;" in page
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert page.count("<script>") == 1  # only the page's own filter script
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    assert scored[0].task["question"] in page
    # without a tokenizer: one span per action, coloured by the turn's mean advantage
    assert page.count('class="tok turn-adv"') == sum(t.n_turns for t in scored)
    assert "rgba(0,170,60," in page and "rgba(220,30,30," in page


def test_per_token_spans_with_a_tokenizer(tmp_path, scored, tokenizer):
    src = write_trajectories(tmp_path / "s.jsonl", scored)
    out = tmp_path / "page.html"
    assert (
        main(["replay", "html", str(src), "-o", str(out), "--tokenizer", str(tokenizer.folder)])
        == 0
    )
    page = out.read_text(encoding="utf-8")
    spans = re.findall(
        r'<span class="tok" style="background:rgba\([^"]+\)" title="advantage ([-+0-9.]+)">', page
    )
    assert len(spans) == sum(len(a) for t in scored for a in t.action_ids)
    # the token texts concatenate back to the actions (escaped)
    first = re.search(r'<pre class="action">(.*?)</pre>', page, re.DOTALL).group(1)
    assert re.sub(r"<[^>]+>", "", first) == "&lt;search&gt;" + scored[0].actions[0][
        len("<search>") :
    ].replace("<", "&lt;").replace(">", "&gt;")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_renders_in_headless_chromium(tmp_path, scored):
    src = write_trajectories(tmp_path / "s.jsonl", scored)
    out = tmp_path / "page.html"
    assert main(["replay", "html", str(src), "-o", str(out)]) == 0
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        proc = subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=2000",
                "--dump-dom",
                out.as_uri(),
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert scored[0].task["question"] in dom
    assert re.search(r'<span class="tok turn-adv" style="background:rgba\(0,170,60,0\.\d+\)"', dom)
    # the script ran: the first trajectory is selected, the others hidden
    assert re.search(
        r'<button[^>]*class="active"[^>]*data-index="0"|<button data-index="0"[^>]*class="active"',
        dom,
    )
    assert dom.count('<article class="traj"') == len(scored)
