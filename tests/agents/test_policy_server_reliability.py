"""``serve-policy`` under a long request: time-slicing, cancellation, shutdown, odd numbers.

Real parts only: the session's tiny transformers model, a real server on 127.0.0.1 (in a thread,
or ``creditgym serve-policy`` as a subprocess for SIGTERM), raw sockets for clients that leave.
Wall-clock times are never asserted, only "finished before a generous bound".
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from creditgym.agents.backend import SamplingParams
from creditgym.agents.policy_server import BackgroundPolicyServer
from creditgym.errors import GenerationCancelled

from .test_policy_server import call

pytestmark = pytest.mark.slow  # end-to-end runs or subprocesses: scheduled first


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from creditgym.agents.hf_backend import TransformersBackend

    with TransformersBackend(tiny_model_dir, max_batch_size=64) as b:
        yield b


@pytest.fixture(scope="module")
def prompts(backend):
    return [backend.tokenizer(f"question {i} about the river")["input_ids"] for i in range(64)]


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def health(url: str) -> dict:
    status, data = call(url + "/health")
    assert status == 200
    return data


def send_and_walk_away_later(url: str, body: dict) -> socket.socket:
    """A client that sends a request and may close the connection without reading the answer."""
    host, port = url.split("//")[1].split(":")
    raw = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    return sock


def long_request(prompts, tokens: int = 3000) -> dict:
    return {"prompt": prompts, "max_tokens": tokens, "temperature": 0}


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingParams(max_new_tokens=20, temperature=0),
        SamplingParams(max_new_tokens=20, temperature=1.0, seed=7),
        SamplingParams(max_new_tokens=20, temperature=0.8, top_p=0.9, top_k=50, seed=3),
        SamplingParams(max_new_tokens=30, temperature=1.0, seed=1, stop=("the", "</search>")),
    ],
)
def test_sliced_and_interleaved_decoding_is_bit_identical_to_one_call(backend, prompts, sampling):
    batch = prompts[:5]
    want = backend.generate(batch, sampling)
    other_sampling = SamplingParams(max_new_tokens=25, temperature=1.0, seed=99)
    other_want = backend.generate(prompts[10:13], other_sampling)
    for slice_tokens in (1, 3, 7):
        mine = backend.start_generation(batch, sampling)
        other = backend.start_generation(prompts[10:13], other_sampling)
        done = [False, False]
        while not all(done):  # two generations take turns, as the server interleaves requests
            done = [mine.advance(slice_tokens), other.advance(slice_tokens + 1)]
        got, got_other = mine.completions(), other.completions()
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        assert [c.logprobs for c in got] == [c.logprobs for c in want]  # exactly, not approx.
        assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
        assert [c.token_ids for c in got_other] == [c.token_ids for c in other_want]
    if sampling.stop:
        assert "stop" in {c.finish_reason for c in want}  # the stop-string path was exercised


def test_should_stop_cancels_generation_between_decoding_steps(backend, prompts):
    polls = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) >= 3

    with pytest.raises(GenerationCancelled, match="after 3 decoding steps"):
        backend.generate(prompts[:4], SamplingParams(max_new_tokens=500), should_stop=should_stop)
    # the backend is not left locked or half-way: the next call works and matches a fresh one
    greedy = SamplingParams(max_new_tokens=5, temperature=0)
    assert backend.generate(prompts[:1], greedy)[0].token_ids == backend.generate(
        prompts[:1], greedy
    )[0].token_ids


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-30, 1e-6])
def test_tiny_temperatures_sample_the_greedy_token_without_nan(backend, prompts, temperature):
    greedy = backend.generate(prompts[:3], SamplingParams(max_new_tokens=8, temperature=0))
    tiny = backend.generate(
        prompts[:3], SamplingParams(max_new_tokens=8, temperature=temperature, seed=0)
    )
    assert [c.token_ids for c in tiny] == [c.token_ids for c in greedy]
    assert all(math.isfinite(lp) and lp <= 0 for c in tiny for lp in c.logprobs)


def test_huge_temperature_samples_finite_logprobs(backend, prompts):
    # Seeded: at this temperature sampling is uniform over the vocabulary, so an unseeded run
    # drew the end-of-sequence token within 8 tokens about once in 400 runs.
    (c,) = backend.generate(prompts[:1], SamplingParams(max_new_tokens=8, temperature=1e300,
                                                        seed=1))
    assert len(c.token_ids) == 8 and c.finish_reason == "length"
    assert all(math.isfinite(lp) for lp in c.logprobs)


@pytest.fixture(scope="module")
def server(backend):
    with BackgroundPolicyServer(backend, "tiny", max_batch_size=64, step_tokens=4) as s:
        yield s


BAD_NUMBERS = [
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"temperature": 10**400}, "temperature"),
    ({"temperature": 1e308 * 10}, "temperature"),
    ({"top_p": float("nan")}, "top_p"),
    ({"top_p": float("-inf")}, "top_p"),
    ({"top_p": 10**400}, "top_p"),
    ({"top_k": 1.5}, "top_k"),
    ({"max_tokens": float("nan")}, "max_tokens"),
    ({"max_tokens": 10**400}, "max_tokens"),
    ({"seed": 2**64}, "seed"),
    ({"seed": float("inf")}, "seed"),
    ({"logprobs": float("nan")}, "logprobs"),
]


@pytest.mark.parametrize("extra,field", BAD_NUMBERS)
def test_non_finite_and_huge_numbers_are_a_400_naming_the_field(server, extra, field):
    # json.dumps writes NaN/Infinity literals, which Python's (and many clients') JSON accepts
    status, data = call(server.url + "/v1/completions", {"prompt": [5, 6], **extra})
    assert status == 400, data
    assert data["error"]["param"] == field and f"'{field}'" in data["error"]["message"]


@pytest.mark.parametrize("temperature", [1e-300, 1e300, 1e-45])
def test_extreme_temperatures_are_served(backend, server, temperature):
    body = {"prompt": [5, 6, 7], "max_tokens": 4, "temperature": temperature, "logprobs": 1}
    status, data = call(server.url + "/v1/completions", body | {"return_token_ids": True})
    assert status == 200, data
    assert all(math.isfinite(lp) for lp in data["choices"][0]["logprobs"]["token_logprobs"])
    if temperature < 1:
        greedy = backend.generate([[5, 6, 7]], SamplingParams(max_new_tokens=4, temperature=0))
        assert data["choices"][0]["token_ids"] == greedy[0].token_ids


def test_short_request_is_answered_while_a_long_one_runs(backend, server, prompts):
    sock = send_and_walk_away_later(server.url, long_request(prompts))
    try:
        wait_for(lambda: health(server.url)["steps"] > 0, what="the long request to start")
        short = {"prompt": prompts[1], "max_tokens": 6, "temperature": 0, "return_token_ids": True}
        status, data = call(server.url + "/v1/completions", short)
        assert status == 200
        alone = backend.generate([prompts[1]], SamplingParams(max_new_tokens=6, temperature=0))
        assert data["choices"][0]["token_ids"] == alone[0].token_ids
        assert health(server.url)["running"] == 64  # the long one is still going
    finally:
        sock.close()
    wait_for(lambda: health(server.url)["running"] == 0, 30, "the long request to be dropped")


def test_client_leaving_drops_its_work_and_generation_stops(server, prompts):
    sock = send_and_walk_away_later(server.url, long_request(prompts))
    # a second long request with another sampling setting waits behind the first
    queued = send_and_walk_away_later(server.url, long_request(prompts[:8]) | {"top_k": 5})
    wait_for(lambda: health(server.url)["steps"] > 0, what="the long request to start")
    sock.close()
    queued.close()
    wait_for(
        lambda: (h := health(server.url))["waiting"] == 0 and h["running"] == 0,
        30,
        "waiting and running to drop to 0",
    )

    def settled():
        before = health(server.url)["steps"]
        time.sleep(0.3)
        return health(server.url)["steps"] == before

    wait_for(settled, 30, "the decoding step counter to settle")
    steps = health(server.url)["steps"]
    time.sleep(1.0)
    assert health(server.url)["steps"] == steps  # nothing is generating for nobody
    status, _ = call(server.url + "/v1/completions", {"prompt": [5, 6], "max_tokens": 2})
    assert status == 200  # and the server still serves


def test_sigterm_stops_serve_policy_mid_generation(tiny_model_dir, prompts):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = [sys.executable, "-m", "creditgym.cli", "serve-policy", "--model",
               str(tiny_model_dir), "--port", str(port), "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:

        def up():
            try:
                return health(url)
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                return None

        wait_for(up, 120, "serve-policy to start")
        sock = send_and_walk_away_later(url, long_request(prompts))
        wait_for(lambda: health(url)["steps"] > 0, what="the long request to start")
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert time.monotonic() - start < 15
        sock.settimeout(5)
        answer = sock.recv(65536)
        assert not answer or b" 503 " in answer.split(b"\r\n")[0]  # told to retry, or just closed
        sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
