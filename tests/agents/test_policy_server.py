"""``creditgym serve-policy`` over real HTTP on 127.0.0.1, serving a tiny transformers model.

Checks the vLLM-shaped answers against the in-process backend, that malformed requests get a 4xx
naming the problem while the server keeps serving, that concurrent requests are batched into
one backend call without changing anyone's answer, and that a failing backend gives a 500.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from creditgym.agents.backend import SamplingParams
from creditgym.agents.openai_backend import OpenAICompatibleBackend
from creditgym.agents.policy_server import (
    BackgroundPolicyServer,
    add_serve_policy_arguments,
)

GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from creditgym.agents.hf_backend import TransformersBackend

    with TransformersBackend(tiny_model_dir, max_batch_size=32, max_context=256) as b:
        yield b


@pytest.fixture(scope="module")
def server(backend):
    with BackgroundPolicyServer(backend, "tiny") as s:
        yield s


def call(url: str, body=None, *, method: str | None = None, raw: bytes | None = None):
    """(status, parsed JSON answer) of one real HTTP request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        url,
        data=data,
        method=method or ("POST" if data else "GET"),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_text_prompt_answer_has_vllm_shape(backend, server):
    status, data = call(
        server.url + "/v1/completions",
        {
            "model": "tiny",
            "prompt": "hello world",
            "max_tokens": 6,
            "temperature": 0,
            "logprobs": 1,
            "return_token_ids": True,
            "prompt_logprobs": 0,
        },
    )
    assert status == 200 and data["object"] == "text_completion" and data["model"] == "tiny"
    (choice,) = data["choices"]
    prompt = backend.tokenizer("hello world")["input_ids"]
    want = backend.generate([prompt], SamplingParams(max_new_tokens=6, temperature=0))[0]
    assert choice["prompt_token_ids"] == prompt
    assert choice["token_ids"] == want.token_ids
    assert choice["finish_reason"] == want.finish_reason
    assert choice["text"] == backend.tokenizer.decode(want.token_ids, skip_special_tokens=True)
    lp = choice["logprobs"]
    assert all(abs(a - b) <= 1e-4 for a, b in zip(lp["token_logprobs"], want.logprobs))
    assert lp["tokens"] == [backend.tokenizer.decode([t]) for t in want.token_ids]
    assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])
    assert [list(d.values())[0] for d in lp["top_logprobs"]] == lp["token_logprobs"]
    scored = backend.score([prompt[:1]], [prompt[1:]])[0]
    entries = choice["prompt_logprobs"]
    assert entries[0] is None and len(entries) == len(prompt)
    for pos, (entry, value) in enumerate(zip(entries[1:], scored), start=1):
        assert abs(entry[str(prompt[pos])]["logprob"] - value) <= 1e-4
    assert data["usage"] == {
        "prompt_tokens": len(prompt),
        "completion_tokens": 6,
        "total_tokens": len(prompt) + 6,
    }


def test_several_prompts_in_one_request(backend, server):
    prompts = [backend.tokenizer(t)["input_ids"] for t in ("one two", "<think> the", "x")]
    status, data = call(
        server.url + "/v1/completions",
        {
            "prompt": prompts,
            "max_tokens": 8,
            "temperature": 0,
            "return_token_ids": True,
        },
    )
    assert status == 200
    want = [backend.generate([p], GREEDY)[0].token_ids for p in prompts]
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert [c["token_ids"] for c in data["choices"]] == want
    assert all(c["logprobs"] is None for c in data["choices"])  # not asked for


def test_stop_string_cut_from_text_unless_asked_to_keep(backend, server):
    prompt = backend.tokenizer("hello world")["input_ids"]
    free = backend.generate([prompt], SamplingParams(max_new_tokens=24, temperature=0))[0]
    stop = backend.tokenizer.decode(free.token_ids[5:7], skip_special_tokens=True).strip()
    answers = {}
    for keep in (False, True):
        status, data = call(
            server.url + "/v1/completions",
            {
                "prompt": prompt,
                "max_tokens": 24,
                "temperature": 0,
                "stop": stop,
                "include_stop_str_in_output": keep,
                "return_token_ids": True,
            },
        )
        assert status == 200 and data["choices"][0]["finish_reason"] == "stop"
        answers[keep] = data["choices"][0]
    assert answers[True]["token_ids"] == answers[False]["token_ids"]  # ids never cut
    assert answers[True]["text"].endswith(stop)
    assert answers[True]["text"] == answers[False]["text"] + stop


def test_tokens_spelled_as_token_ids(backend, server):
    status, data = call(
        server.url + "/v1/completions",
        {
            "prompt": [5, 6, 7],
            "max_tokens": 3,
            "temperature": 0,
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
            "prompt_logprobs": 1,
        },
    )
    assert status == 200
    choice = data["choices"][0]
    want = backend.generate([[5, 6, 7]], SamplingParams(max_new_tokens=3, temperature=0))[0]
    assert choice["logprobs"]["tokens"] == [f"token_id:{t}" for t in want.token_ids]
    assert choice["prompt_logprobs"][1]["6"]["decoded_token"] == "token_id:6"


MALFORMED = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    ({"max_tokens": 3}, 400, "missing 'prompt'"),
    ({"prompt": []}, 400, "'prompt' must be"),
    ({"prompt": [1, "a"]}, 400, "'prompt'[1] must be a token id"),
    ({"prompt": [1, -4]}, 400, "not a token id of this model"),
    ({"prompt": [1, 10**9]}, 400, "not a token id of this model"),
    ({"prompt": [[1], 7]}, 400, "'prompt'[1] must be token ids or a string"),
    ({"prompt": [1, 2], "max_tokens": 0}, 400, "'max_tokens' must be >= 1"),
    ({"prompt": [1, 2], "max_tokens": "5"}, 400, "'max_tokens' must be an integer"),
    ({"prompt": [1, 2], "temperature": -1}, 400, "'temperature' must be in"),
    ({"prompt": [1, 2], "top_p": 0}, 400, "'top_p' must be in (0.0, 1.0]"),
    ({"prompt": [1, 2], "top_k": -3}, 400, "'top_k' must be >= -1"),
    ({"prompt": [1, 2], "n": 2}, 400, "'n' = 2 is not supported"),
    ({"prompt": [1, 2], "stream": True}, 400, "'stream' = True is not supported"),
    ({"prompt": [1, 2], "logprobs": 5}, 400, "'logprobs' must be between 0 and 1"),
    ({"prompt": [1, 2], "stop": 5}, 400, "'stop' must be a non-empty string"),
    ({"prompt": [1, 2], "stop_token_ids": [1, "x"]}, 400, "'stop_token_ids'[1]"),
    ({"prompt": [1, 2], "echo": True}, 400, "'echo' = True is not supported"),
    ({"prompt": [1, 2], "presence_penalty": 0.5}, 400, "'presence_penalty' = 0.5"),
    ({"prompt": [1, 2], "return_token_ids": "yes"}, 400, "must be true or false"),
    ({"prompt": [1, 2], "max_tokens": 300}, 400, "maximum context length is 256"),
    ({"prompt": [[1]] * 65}, 413, "too many prompts: 65"),
    ({"prompt": [1, 2], "model": "gpt-4"}, 404, "`gpt-4` does not exist"),
]


@pytest.mark.parametrize("body,status,message", MALFORMED)
def test_malformed_requests_get_4xx_and_the_server_keeps_serving(server, body, status, message):
    raw = body if isinstance(body, bytes) else None
    got, data = call(server.url + "/v1/completions", None if raw else body, raw=raw)
    assert got == status
    assert message in data["error"]["message"]
    assert data["error"]["code"] == status
    ok, answer = call(server.url + "/v1/completions", {"prompt": [1, 2], "max_tokens": 1})
    assert ok == 200 and len(answer["choices"][0]["text"]) >= 0


def test_unknown_paths_and_methods(server):
    status, data = call(server.url + "/v1/chat/completions", {"messages": []})
    assert status == 404 and "POST /v1/completions" in data["error"]["message"]
    status, data = call(server.url + "/v1/completions", method="GET")
    assert status == 405 and "use POST" in data["error"]["message"]


def test_models_and_health(server):
    status, data = call(server.url + "/v1/models")
    assert status == 200 and data["data"][0]["id"] == "tiny"
    assert data["data"][0]["max_model_len"] == 256
    status, data = call(server.url + "/health")
    assert status == 200 and data["status"] == "ok" and data["backend"] == "TransformersBackend"
    assert data["prompts"] >= data["batches"] >= 0 and data["waiting"] == 0


class HeldBackend:
    """The real backend, with every generate call's size recorded and the first call held until
    ``release`` is set: lets a test line requests up behind a busy model deterministically."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.tokenizer, self.vocab_size = inner.tokenizer, inner.vocab_size
        self.max_context, self.eos_token_ids = inner.max_context, inner.eos_token_ids
        self.calls: list[int] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def generate(self, prompts, sampling):
        self.calls.append(len(prompts))
        self.entered.set()
        assert self.release.wait(60)
        return self.inner.generate(prompts, sampling)

    def score(self, prefixes, continuations):
        return self.inner.score(prefixes, continuations)

    def close(self) -> None:
        pass


def test_queued_requests_are_batched_without_changing_answers(backend):
    held = HeldBackend(backend)
    prompts = [backend.tokenizer(f"question {i} about the river")["input_ids"] for i in range(8)]
    seeded = SamplingParams(max_new_tokens=6, temperature=1.0, seed=3)
    results: dict[str, list] = {}
    with (
        BackgroundPolicyServer(held, "tiny") as srv,
        OpenAICompatibleBackend(srv.url, "tiny") as client,
    ):

        def run(name, batch, sampling):
            results[name] = client.generate(batch, sampling)

        first = threading.Thread(target=run, args=("first", prompts[:1], GREEDY))
        first.start()
        assert held.entered.wait(60)  # the model is busy with the first request
        others = [
            threading.Thread(target=run, args=("greedy", prompts[1:], GREEDY)),
            threading.Thread(target=run, args=("seeded", prompts[:2], seeded)),
        ]
        for t in others:
            t.start()
        deadline = time.monotonic() + 60
        while call(srv.url + "/health")[1]["waiting"] < 9 and time.monotonic() < deadline:
            time.sleep(0.02)
        held.release.set()
        for t in [first, *others]:
            t.join(60)
    # one call for the first request, one for the 7 queued greedy ones, one per seeded request
    assert held.calls[0] == 1 and sorted(held.calls[1:]) == [1, 1, 7]
    want = [backend.generate([p], GREEDY)[0] for p in prompts]
    got = results["first"] + results["greedy"]
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert all(
        abs(a - b) <= 1e-4 for g, w in zip(got, want) for a, b in zip(g.logprobs, w.logprobs)
    )
    for prompt, completion in zip(prompts[:2], results["seeded"]):
        assert completion.token_ids == backend.generate([prompt], seeded)[0].token_ids


def test_backend_failure_is_a_500_and_the_server_keeps_serving(tiny_model_dir):
    from creditgym.agents.hf_backend import TransformersBackend

    broken = TransformersBackend(tiny_model_dir)
    broken.close()  # every later generate raises
    with BackgroundPolicyServer(broken, "tiny") as srv:
        for _ in range(2):
            status, data = call(srv.url + "/v1/completions", {"prompt": [1, 2], "max_tokens": 2})
            assert status == 500 and "closed" in data["error"]["message"]
        assert call(srv.url + "/health")[0] == 200


def test_cli_arguments_default_to_localhost():
    parser = argparse.ArgumentParser()
    add_serve_policy_arguments(parser)
    args = parser.parse_args(["--model", "runs/tiny"])
    assert (args.host, args.port, args.max_batch_size) == ("127.0.0.1", 8000, 32)
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --model is required
