"""replay show prints any string (lone surrogates, terminals that cannot encode) and streams a
large file in bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from creditgym.replay.cli import main
from creditgym.replay.io import write_trajectories

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "120"}


def test_lone_surrogates_print_as_replacement_characters(tmp_path, trajectories, capsys):
    t = trajectories[0]
    t.observations[0] = "seen \ud800 here"
    t.id = "id-\udfff"
    path = write_trajectories(tmp_path / "s.jsonl", trajectories)
    assert main(["replay", "show", str(path), "--max-obs-chars", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert "seen \ufffd here" in out and "id-\ufffd" in out and "12 trajectories" in out


def test_a_terminal_that_cannot_encode_does_not_crash_show(tmp_path, trajectories):
    trajectories[0].observations[0] = "caf\u00e9 \ud800 \u4e2d"
    path = write_trajectories(tmp_path / "s.jsonl", trajectories)
    proc = subprocess.run(
        [sys.executable, "-m", "creditgym.replay.cli", "replay", "show", str(path), "--max-obs-chars", "0"],
        capture_output=True, env={**ENV, "PYTHONIOENCODING": "ascii"}, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"caf\\xe9 \\ufffd \\u4e2d" in proc.stdout


def test_show_streams_a_large_file_in_bounded_memory(tmp_path, trajectories):
    record = trajectories[0].to_dict()
    record["observations"][0] = "x" * 200_000
    small = write_trajectories(tmp_path / "small.jsonl", trajectories[:2])
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for i in range(100):
            record["id"] = f"t{i}"
            f.write(json.dumps(record) + "\n")
    size = path.stat().st_size
    assert size > 20_000_000
    script = textwrap.dedent(f"""
        import io, sys, tracemalloc
        from creditgym.replay.cli import main
        sys.stdout = io.TextIOWrapper(open("/dev/null", "wb"), encoding="utf-8")
        main(["replay", "show", {str(small)!r}])  # imports and caches, before measuring
        tracemalloc.start()
        code = main(["replay", "show", {str(path)!r}])
        print(code, tracemalloc.get_traced_memory()[1], file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, env=ENV, timeout=300)
    code, peak = proc.stderr.decode().split()[-2:]
    assert code == "0", proc.stderr.decode()
    assert int(peak) < size / 10, f"peak {int(peak) / 1e6:.1f} MB for a {size / 1e6:.0f} MB file"
