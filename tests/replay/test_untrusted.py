"""A trajectory file from someone else is data: verify/rescore never import a module it names,
never contact a URL or open a path it names, unless the user allows it with a flag."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from creditgym.errors import UntrustedFileError
from creditgym.replay.cli import main
from creditgym.replay.io import write_trajectories
from creditgym.replay.trust import EnvPolicy
from tests.replay.helpers import SEARCH_KWARGS

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("imported")
import gymnasium
from creditgym.envs.examples.calculator import CalculatorEnv

class MyCalc(CalculatorEnv):
    pass

gymnasium.register(id="hostile/Calc-v0", entry_point="{name}:MyCalc")
"""


@pytest.fixture()
def marker_module(tmp_path, monkeypatch):
    """A module in tmp_path that writes a marker file when imported; returns (name, marker)."""
    name, marker = f"evil_{tmp_path.name.replace('-', '_')}", tmp_path / "IMPORTED"
    (tmp_path / f"{name}.py").write_text(EVIL.format(marker=str(marker), name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def _file(tmp_path, trajectories, **fields):
    for t in trajectories:
        for key, value in fields.items():
            setattr(t, key, value)
    return write_trajectories(tmp_path / "hostile.jsonl", trajectories[:3], overwrite=True)


@pytest.mark.parametrize("command", ["verify", "rescore"])
def test_an_env_id_naming_a_module_is_never_imported(command, tmp_path, trajectories, marker_module, capsys):
    name, marker = marker_module
    for env_id in (f"{name}:creditgym/Search-v0", "os:system", "CartPole-v1"):
        path = _file(tmp_path, trajectories, env_id=env_id)
        tail = ["-o", str(tmp_path / "r.jsonl"), "--reward", "f1=1"] if command == "rescore" else []
        assert main(["replay", command, str(path), *tail]) == 2
        err = capsys.readouterr().err
        assert f"env_id {env_id!r}" in err and "--allow-module" in err
    assert not marker.exists() and name not in sys.modules
    assert not (tmp_path / "r.jsonl").exists()


def test_allow_module_lets_its_registered_ids_through(marker_module):
    name, marker = marker_module
    with pytest.raises(UntrustedFileError, match="--allow-module"):
        EnvPolicy().check_env_id("hostile/Calc-v0")
    assert not marker.exists()
    policy = EnvPolicy(allow_modules=(name,))
    for env_id in ("hostile/Calc-v0", f"{name}:hostile/Calc-v0"):
        env = policy.make_env(env_id, {})
        assert type(env.unwrapped).__name__ == "MyCalc"
        env.close()
    assert marker.exists()


class _Recorder(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_POST(self):  # noqa: N802
        self.requests.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture()
def http_server():
    _Recorder.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.requests
    server.shutdown()
    server.server_close()


def test_a_retriever_url_in_the_file_is_never_contacted(tmp_path, trajectories, http_server, capsys):
    url, seen = http_server
    retriever = {"backend": "http", "url": url, "retries": 0, "timeout": 5}
    path = _file(tmp_path, trajectories, env_kwargs={**SEARCH_KWARGS, "retriever": retriever})
    assert main(["replay", "verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert "env_kwargs.retriever.url" in err and "--trust-file" in err and "--retriever" in err
    out = ["-o", str(tmp_path / "r.jsonl"), "--reward", "f1=1"]
    assert main(["replay", "rescore", str(path), *out]) == 2
    assert "env_kwargs.retriever.url" in capsys.readouterr().err
    assert seen == []
    # the user's own retriever replaces the file's: here the built-in world's bm25s index
    from creditgym.envs.defaults import ensure_world_index
    from creditgym.envs.world import WorldConfig

    index = ensure_world_index(WorldConfig(), "bm25s").index
    assert main(["replay", "verify", str(path), "--retriever", str(index)]) == 0
    assert "3/3 replayed trajectories match" in capsys.readouterr().out
    assert seen == []
    # --trust-file follows the file: now the server is contacted (and cannot answer)
    assert main(["replay", "verify", str(path), "--trust-file"]) == 1
    assert seen


def test_a_tasks_path_in_the_file_is_never_opened(tmp_path, trajectories, capsys):
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"question": "q", "golden_answers": ["a"]}\n')
    opened: list[str] = []

    def hook(event, args):
        if event == "open" and args and str(args[0]).endswith(("secret.jsonl", "shadow")):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    for value, kwargs in (
        ("/etc/shadow", {**SEARCH_KWARGS, "tasks_path": "/etc/shadow"}),
        (str(secret), {**SEARCH_KWARGS, "tasks_path": str(secret)}),
        (str(secret), {"config": {**SEARCH_KWARGS, "tasks_path": str(secret)}}),
    ):
        path = _file(tmp_path, trajectories, env_kwargs=kwargs)
        assert main(["replay", "verify", str(path)]) == 2
        err = capsys.readouterr().err
        assert "tasks_path" in err and "--tasks" in err and "--trust-file" in err
    assert "env_kwargs.config.tasks_path" in err
    assert opened == []


def test_path_like_values_under_any_key_are_refused():
    policy = EnvPolicy()
    with pytest.raises(UntrustedFileError, match=r"env_kwargs\.extra\.where"):
        policy.check_kwargs({"extra": {"where": "~/.ssh/id_rsa"}})
    with pytest.raises(UntrustedFileError, match=r"env_kwargs\.cache_dir"):
        policy.check_kwargs({"cache_dir": "data"})
    assert policy.check_kwargs(dict(SEARCH_KWARGS)) == SEARCH_KWARGS
    trusted = EnvPolicy(trusted_paths={"env_kwargs.cache_dir"})
    assert trusted.check_kwargs({"cache_dir": "data"}) == {"cache_dir": "data"}
