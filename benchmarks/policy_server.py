"""Policy serving speed: ``serve-policy`` over HTTP against in-process generation, tiny model.

Builds the tiny local model (``creditgym.agents.tiny``, offline, seconds), starts ``serve-policy``
in a separate process (so server and client do not share a GIL), and sends --requests completion
requests (distinct prompts, --max-new-tokens each, temperature 1, unseeded so the server may
batch them) through ``OpenAICompatibleBackend`` with at most 1, 8 and 32 in flight. For the same
prompts it times ``TransformersBackend.generate`` in this process with batches of 1, 8 and 32.
Reported: requests/s, generated tokens/s, and the mean prompts per backend call (the server's
``/health`` counters). Usage: ``python benchmarks/policy_server.py [--requests 64]
[--max-new-tokens 32] [--levels 1,8,32] [--threads 1] [--model PATH]``. It prints a table; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_model(out: Path) -> Path:
    """The tiny model, trained on a small built-in world's text."""
    from creditgym.agents.tiny import TinyModelConfig, build_tiny_model
    from creditgym.envs.world import World, WorldConfig

    world = World.generate(WorldConfig(seed=0, num_documents=300))
    texts = [doc["contents"] for doc in world.iter_documents()]
    texts += [task.question for task in world.questions("train")[:200]]
    return build_tiny_model(out, texts, TinyModelConfig(seed=0))


def prompts_for(tokenizer, n: int) -> list[list[int]]:
    """``n`` distinct ChatML prompts of 20-40 tokens."""
    from creditgym.envs.world import World, WorldConfig

    questions = [t.question for t in World.generate(WorldConfig(seed=1)).questions("test")]
    out = []
    for i in range(n):
        text = (
            f"<|im_start|>user\n{questions[i % len(questions)]}<|im_end|>\n<|im_start|>assistant\n"
        )
        out.append(tokenizer(text)["input_ids"][:40])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=5) as resp:
        return json.loads(resp.read())


def start_server(model: Path, port: int, max_batch: int) -> subprocess.Popen:
    code = (
        "import argparse, sys; sys.path.insert(0, %r)\n"
        "from creditgym.agents.policy_server import add_serve_policy_arguments, run_serve_policy\n"
        "p = argparse.ArgumentParser(); add_serve_policy_arguments(p)\n"
        "run_serve_policy(p.parse_args(sys.argv[1:]))\n" % str(ROOT)
    )
    args = ["--model", str(model), "--port", str(port), "--max-batch-size", str(max_batch)]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve-policy exited with code {proc.returncode}")
        try:
            health(url)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("serve-policy did not come up within 120 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=64, help="requests per level (default 64)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--levels", default="1,8,32", help="concurrency levels / batch sizes")
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny model)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads, in-process and in the server (default 1: on a small shared machine "
        "torch's spinning thread pool makes more threads far slower)",
    )
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server process inherits it
    import torch

    torch.set_num_threads(args.threads)
    levels = [int(x) for x in args.levels.split(",")]

    from creditgym.agents.backend import SamplingParams
    from creditgym.agents.hf_backend import TransformersBackend
    from creditgym.agents.openai_backend import OpenAICompatibleBackend

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else build_model(Path(tmp) / "tiny")
        sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0)
        rows = []
        backend = TransformersBackend(model, max_batch_size=max(levels))
        prompts = prompts_for(backend.tokenizer, args.requests)
        backend.generate(prompts[:2], sampling)  # warm-up
        for level in levels:
            print(f"in-process, batches of {level} ...", flush=True)
            t0, tokens = time.perf_counter(), 0
            for start in range(0, len(prompts), level):
                tokens += sum(
                    len(c.token_ids)
                    for c in backend.generate(prompts[start : start + level], sampling)
                )
            rows.append(("in-process generate", level, time.perf_counter() - t0, tokens, level))
        backend.close()

        port = free_port()
        server = start_server(model, port, max(levels))
        url = f"http://127.0.0.1:{port}"
        try:
            with OpenAICompatibleBackend(url, None, max_concurrency=1) as warm:
                warm.generate(prompts[:2], sampling)
            for level in levels:
                print(f"serve-policy over HTTP, concurrency {level} ...", flush=True)
                before = health(url)
                with OpenAICompatibleBackend(url, None, max_concurrency=level) as client:
                    t0 = time.perf_counter()
                    done = client.generate(prompts, sampling)
                    elapsed = time.perf_counter() - t0
                after = health(url)
                batches = after["batches"] - before["batches"]
                mean_batch = (after["prompts"] - before["prompts"]) / max(batches, 1)
                tokens = sum(len(c.token_ids) for c in done)
                rows.append(("serve-policy (HTTP)", level, elapsed, tokens, mean_batch))
        finally:
            server.terminate()
            server.wait(30)

    print(
        f"\n{args.requests} requests, {args.max_new_tokens} new tokens max, temperature 1, "
        f"tiny model on CPU ({os.cpu_count()} cores, {args.threads} torch thread(s))\n"
    )
    print(
        "| mode | concurrency / batch | requests/s | generated tokens/s "
        "| prompts per backend call |"
    )
    print("|---|---:|---:|---:|---:|")
    for mode, level, elapsed, tokens, mean_batch in rows:
        print(
            f"| {mode} | {level} | {args.requests / elapsed:.1f} | {tokens / elapsed:.0f} | "
            f"{mean_batch:.1f} |"
        )


if __name__ == "__main__":
    main()
