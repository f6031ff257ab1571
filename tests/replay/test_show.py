"""replay show: the terminal view holds the task, turns, tool calls, rewards and advantages."""

from __future__ import annotations

import io

from rich.console import Console

from creditgym.replay.cli import main
from creditgym.replay.rescore import rescore_trajectories
from creditgym.replay.show import shorten, show, turn_advantages


def _render(trajs, **kw) -> str:
    buf = io.StringIO()
    show(trajs, console=Console(file=buf, width=140, color_system=None), **kw)
    return buf.getvalue()


def test_view_of_one_trajectory(trajectories):
    t = rescore_trajectories(trajectories, credit="grpo").trajectories[2]  # g0-invalid
    text = _render([t])
    assert t.task["question"] in text
    for k in range(t.n_turns):
        assert f"turn {k}" in text
    assert "valid NO" in text and "search(query='" in text and "<information>" in text
    assert "advantage" in text and "mean +" in text
    assert "return 1" in text and "em=1" in text


def test_summary_table_and_ids(traj_file, capsys):
    assert main(["replay", "show", str(traj_file), "--max-obs-chars", "80"]) == 0
    out = capsys.readouterr().out
    assert all(f"g{g}-expert" in out for g in range(4))
    assert "characters ...]" in out  # observations shortened
    assert main(["replay", "show", str(traj_file), "--id", "g2-wrong"]) == 0
    out = capsys.readouterr().out
    assert "Nowhere at all" in out and "g1-expert" not in out
    assert main(["replay", "show", str(traj_file), "--id", "nope"]) == 2


def test_helpers(trajectories):
    assert shorten("abcdefghij" * 10, 30).startswith("abcdefghijabcdefghij")
    assert "[... 70 characters ...]" in shorten("abcdefghij" * 10, 30)
    assert turn_advantages(trajectories[0]) is None
    trajectories[0].advantages = [0.0] * 3  # misaligned: ignored rather than mis-shown
    assert turn_advantages(trajectories[0]) is None
