"""OpenAICompatibleBackend over real HTTP against ``serve-policy`` (a tiny transformers model).

Results must equal the in-process TransformersBackend's (ids exactly, log-probs within 1e-4),
whatever the server batched together. Failures are exercised with real servers on 127.0.0.1: a
port where nothing listens, and a small proxy that fails or stalls before forwarding.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading

import pytest
from aiohttp import ClientSession, web

from creditgym.agents.backend import SamplingParams
from creditgym.agents.openai_backend import (
    BackendError,
    OpenAICompatibleBackend,
    completions_url,
    parse_completion,
    parse_token_id,
)
from creditgym.agents.policy_server import BackgroundPolicyServer

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)
TEXTS = [
    "hello world",
    "<|im_start|>user\nWho founded the city?<|im_end|>\n<|im_start|>assistant\n",
    "The river flows past",
    "<search> capital </search>",
    "a",
    "Doc 1(Title: Vabrubam) The",
]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from creditgym.agents.hf_backend import TransformersBackend

    with TransformersBackend(tiny_model_dir, max_batch_size=32) as b:
        yield b


@pytest.fixture(scope="module")
def server(backend):
    with BackgroundPolicyServer(backend, "tiny") as s:
        yield s


@pytest.fixture
def client(server):
    with OpenAICompatibleBackend(server.url, "tiny", retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def prompts(backend):
    return [backend.tokenizer(t)["input_ids"] for t in TEXTS]


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.token_ids == w.token_ids
        assert g.finish_reason == w.finish_reason
        assert len(g.logprobs) == len(w.logprobs)
        assert all(abs(a - b) <= 1e-4 for a, b in zip(g.logprobs, w.logprobs))


def test_greedy_generate_equals_in_process(backend, client, prompts):
    want = backend.generate(prompts, GREEDY)
    got = client.generate(prompts, GREEDY)
    assert_same(got, want)
    assert all(len(c.token_ids) > 0 for c in got)
    assert got[0].text == backend.tokenizer.decode(got[0].token_ids, skip_special_tokens=False)
    assert got[0].extra["request_id"].startswith("cmpl-")


def test_seeded_sampling_equals_in_process(backend, client, prompts):
    sampling = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=50, seed=7)
    for prompt in prompts[:3]:
        assert_same(client.generate([prompt], sampling), backend.generate([prompt], sampling))


def test_score_equals_in_process(backend, client, prompts):
    continuations = [c.token_ids for c in backend.generate(prompts, GREEDY)]
    want = backend.score(prompts, continuations)
    got = client.score(prompts, continuations)
    assert [len(g) for g in got] == [len(c) for c in continuations]
    assert all(abs(a - b) <= 1e-4 for g, w in zip(got, want) for a, b in zip(g, w))
    # generate's greedy log-probs are score's at temperature 1 (the backend's definition)
    generated = client.generate(prompts[:1], GREEDY)[0]
    assert all(abs(a - b) <= 1e-4 for a, b in zip(generated.logprobs, got[0]))


def test_score_edge_cases(client, prompts):
    assert client.score([prompts[0]], [[]]) == [[]]
    with pytest.raises(ValueError, match="prefix 0 is empty"):
        client.score([[]], [prompts[0]])
    with pytest.raises(ValueError, match="2 prefixes but 1"):
        client.score(prompts[:2], prompts[:1])


def test_32_concurrent_requests_each_get_their_own_answer(backend, server, prompts):
    many = [p + [t] for p in prompts for t in prompts[1][:6]][:32]
    assert len({tuple(p) for p in many}) == 32
    want = [backend.generate([p], GREEDY)[0] for p in many]  # one at a time: no batching
    with OpenAICompatibleBackend(server.url, "tiny", max_concurrency=32) as c:
        assert_same(c.generate(many, GREEDY), want)


def test_stop_strings(backend, client, prompts):
    prompt = prompts[0]
    free = backend.generate([prompt], dataclasses.replace(GREEDY, max_new_tokens=24))[0]
    piece = backend.tokenizer.decode(free.token_ids[5:7], skip_special_tokens=True).strip()
    assert piece, "the tiny model's greedy text should have visible text at tokens 5-6"
    sampling = dataclasses.replace(GREEDY, max_new_tokens=24, stop=(piece,))
    want = backend.generate([prompt], sampling)[0]
    got = client.generate([prompt], sampling)[0]
    assert_same([got], [want])
    assert got.finish_reason == "stop" and len(got.token_ids) <= 7
    assert got.text.endswith(piece)  # include_stop_str_in_output: the stop string is kept


def test_stop_token_ids(backend, client, prompts):
    free = backend.generate([prompts[2]], GREEDY)[0]
    stop_id = free.token_ids[3]
    sampling = dataclasses.replace(GREEDY, stop_token_ids=(stop_id,))
    got = client.generate([prompts[2]], sampling)[0]
    assert got.finish_reason == "stop" and got.token_ids[-1] == stop_id
    assert got.token_ids == free.token_ids[: free.token_ids.index(stop_id) + 1]


def test_async_and_sync_calls_from_inside_a_running_loop(backend, client, prompts):
    want = backend.generate(prompts, GREEDY)

    async def main():
        per_trajectory = await asyncio.gather(*(client.agenerate([p], GREEDY) for p in prompts))
        blocking = client.generate(prompts[:2], GREEDY)  # blocks this loop, never deadlocks
        scored = await client.ascore(prompts[:1], [want[0].token_ids])
        return [c[0] for c in per_trajectory], blocking, scored

    got, blocking, scored = asyncio.run(main())
    assert_same(got, want)
    assert_same(blocking, want[:2])
    assert len(scored[0]) == len(want[0].token_ids)


def test_token_ids_parsed_from_token_id_strings(backend, server, prompts):
    async def fetch():
        async with ClientSession() as session:
            body = {
                "prompt": prompts[0],
                "max_tokens": 6,
                "temperature": 0,
                "logprobs": 1,
                "return_tokens_as_token_ids": True,
            }
            async with session.post(server.url + "/v1/completions", json=body) as resp:
                return await resp.json()

    data = asyncio.run(fetch())
    assert "token_ids" not in data["choices"][0]  # only the "token_id:N" strings
    assert all(t.startswith("token_id:") for t in data["choices"][0]["logprobs"]["tokens"])
    parsed = parse_completion(data)
    assert (
        parsed.token_ids
        == backend.generate([prompts[0]], dataclasses.replace(GREEDY, max_new_tokens=6))[
            0
        ].token_ids
    )
    assert parse_token_id("token_id:123") == 123
    for bad in ("123", "token_id:x", "<s>"):
        with pytest.raises(BackendError):
            parse_token_id(bad)


def test_completions_url_forms():
    assert completions_url("127.0.0.1:8000") == "http://127.0.0.1:8000/v1/completions"
    assert completions_url("http://h:1/") == "http://h:1/v1/completions"
    assert completions_url("http://h:1/v1") == "http://h:1/v1/completions"
    assert completions_url("https://h/v1/completions") == "https://h/v1/completions"


# -- failures ---------------------------------------------------------------------------------


async def _new_event() -> asyncio.Event:
    return asyncio.Event()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FlakyProxy:
    """A real HTTP server that answers the first ``failures`` requests with ``status`` (or stalls
    for ``delay`` seconds), then forwards each request to ``target``; counts what it received."""

    def __init__(self, target: str, failures: int, status: int = 503, delay: float = 0.0):
        self.target, self.failures, self.status, self.delay = target, failures, status, delay
        self.attempts = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        if self.attempts <= self.failures:
            if self.delay:  # stall (until the proxy shuts down, at the latest)
                try:
                    await asyncio.wait_for(self._closing.wait(), self.delay)
                except asyncio.TimeoutError:
                    pass
            else:
                error = {"error": {"message": f"proxy says no ({self.status})"}}
                return web.json_response(error, status=self.status)
        async with ClientSession() as session:
            async with session.post(
                self.target + request.path, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                return web.Response(
                    body=await resp.read(), status=resp.status, content_type="application/json"
                )

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        self._closing = asyncio.run_coroutine_threadsafe(_new_event(), self._loop).result(10)
        app = web.Application()
        app.router.add_post("/v1/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None)

        async def start():
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
            return self._runner.addresses[0][1]

        self.port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._closing.set)
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def test_unreachable_server_raises_clear_error_after_retries():
    url = f"http://127.0.0.1:{free_port()}"
    with OpenAICompatibleBackend(url, "tiny", retries=2, backoff=0.01) as c:
        with pytest.raises(BackendError) as err:
            c.generate([[1, 2, 3]], GREEDY)
    message = str(err.value)
    assert f"{url}/v1/completions" in message and "3 attempts" in message
    assert "serve-policy" in message


def test_transient_5xx_is_retried_then_succeeds(backend, server, prompts):
    with FlakyProxy(server.url, failures=2) as proxy:
        with OpenAICompatibleBackend(proxy.url, "tiny", retries=3, backoff=0.01) as c:
            got = c.generate([prompts[0]], GREEDY)
        assert proxy.attempts == 3
    assert_same(got, backend.generate([prompts[0]], GREEDY))


def test_persistent_5xx_gives_up_with_the_servers_message(server):
    with FlakyProxy(server.url, failures=100) as proxy:
        with OpenAICompatibleBackend(proxy.url, "tiny", retries=1, backoff=0.01) as c:
            with pytest.raises(BackendError, match=r"unreachable after 2 attempts.*proxy says no"):
                c.generate([[1, 2]], GREEDY)
        assert proxy.attempts == 2


def test_4xx_fails_at_once_with_the_servers_message(server):
    with FlakyProxy(server.url, failures=100, status=400) as proxy:
        with OpenAICompatibleBackend(proxy.url, "tiny", retries=3, backoff=0.01) as c:
            with pytest.raises(BackendError, match=r"HTTP 400.*proxy says no"):
                c.generate([[1, 2]], GREEDY)
        assert proxy.attempts == 1


def test_timeout_is_retried(backend, server, prompts):
    with FlakyProxy(server.url, failures=1, delay=60.0) as proxy:
        with OpenAICompatibleBackend(proxy.url, "tiny", timeout=1.0, retries=1, backoff=0.01) as c:
            got = c.generate([prompts[0]], GREEDY)
        assert proxy.attempts == 2
    assert_same(got, backend.generate([prompts[0]], GREEDY))


def test_per_prompt_errors_raise_or_become_error_completions(backend, server, prompts):
    bad = [1, 2, 10**7]  # not a token id of the tiny model: the server answers 400
    with OpenAICompatibleBackend(server.url, "tiny") as c:
        with pytest.raises(BackendError, match=r"HTTP 400.*not a token id of this model"):
            c.generate([prompts[0], bad], GREEDY)
    with OpenAICompatibleBackend(server.url, "tiny", on_error="completion") as c:
        good, failed = c.generate([prompts[0], bad], GREEDY)
    assert_same([good], backend.generate([prompts[0]], GREEDY))
    assert failed.finish_reason == "error" and failed.token_ids == []
    assert "not a token id" in failed.error


def test_wrong_model_name_and_closed_client(server):
    with OpenAICompatibleBackend(server.url, "other-model") as c:
        with pytest.raises(BackendError, match="HTTP 404.*other-model"):
            c.generate([[1, 2]], GREEDY)
    c = OpenAICompatibleBackend(server.url, "tiny")
    c.close()
    c.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        c.generate([[1, 2]], GREEDY)
    with pytest.raises(ValueError):
        OpenAICompatibleBackend(server.url, "tiny", max_concurrency=0)
