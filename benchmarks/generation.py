"""Benchmark TransformersBackend: generated tokens per second at several batch sizes.

Builds a tiny model (``creditgym.agents.tiny``) from a small built-in world in a temp dir, or
uses ``--model PATH``, and samples ``--max-new-tokens`` tokens for each of ``batch`` ChatML
question prompts (end-of-sequence stopping off, so every row generates the same count).

    python benchmarks/generation.py                       # batches 1, 8, 64 on the CPU
    python benchmarks/generation.py --batches 1 32 --device cuda --model runs/tiny
    python benchmarks/generation.py --threads 1            # one intra-op thread

Columns: ``prompt`` mean prompt tokens; ``new`` tokens generated in all; ``gen s`` wall time of
one ``generate`` call (after a warm-up call); ``gen tok/s`` generated tokens per second;
``ms/step`` time per decoding step of the whole batch; ``score tok/s`` teacher-forced scoring
throughput of the same prompts + completions (``score``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _texts_and_questions(num_documents: int) -> tuple[list[str], list[str]]:
    from creditgym.envs.world import World, WorldConfig

    world = World.generate(WorldConfig(seed=0, num_documents=num_documents))
    questions = [task.question for task in world.questions("train")]
    return [doc["contents"] for doc in world.iter_documents()] + questions, questions


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument(
        "--model", type=Path, default=None, help="model folder (default: build a tiny one)"
    )
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: by device)")
    ap.add_argument("--world-documents", type=int, default=500)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's). On a busy machine 1 can be much faster: "
        "a tiny model's ops are too small to share, and waiting threads spin",
    )
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from creditgym.agents.backend import SamplingParams
    from creditgym.agents.hf_backend import TransformersBackend
    from creditgym.agents.tiny import build_tiny_model

    texts, questions = _texts_and_questions(args.world_documents)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_tiny_model(Path(tmp) / "tiny", texts, progress=True)
        backend = TransformersBackend(
            model_dir,
            device=args.device,
            dtype=args.dtype,
            max_batch_size=max(args.batches),
            stop_at_eos=False,
        )
        tok = backend.tokenizer
        chats = [[{"role": "user", "content": q}] for q in questions[: max(args.batches)]]
        prompts = [
            tok.encode(
                tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                add_special_tokens=False,
            )
            for c in chats
        ]
        sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)
        params = sum(p.numel() for p in backend.model.parameters())
        print(
            f"\nmodel: {params:,} parameters, vocab {backend.vocab_size}, {backend.model.dtype}, "
            f"device {backend.device}, torch threads {torch.get_num_threads()}\n"
        )
        header = (
            f"{'batch':>6} {'prompt':>7} {'new':>7} {'gen s':>8} {'gen tok/s':>10} "
            f"{'ms/step':>8} {'score tok/s':>12}"
        )
        print(header)
        print("-" * len(header))
        for batch in args.batches:
            rows = prompts[:batch]
            backend.generate(
                rows, SamplingParams(max_new_tokens=4, temperature=1.0, seed=0)
            )  # warm-up
            _sync(torch, backend.device)
            t0 = time.perf_counter()
            out = backend.generate(rows, sampling)
            _sync(torch, backend.device)
            gen_s = time.perf_counter() - t0
            new = sum(len(c.token_ids) for c in out)
            t0 = time.perf_counter()
            backend.score(rows, [c.token_ids for c in out])
            _sync(torch, backend.device)
            score_s = time.perf_counter() - t0
            mean_prompt = sum(map(len, rows)) / len(rows)
            print(
                f"{batch:>6} {mean_prompt:>7.1f} {new:>7} {gen_s:>8.3f} {new / gen_s:>10.0f} "
                f"{1000 * gen_s / args.max_new_tokens:>8.2f} {new / score_s:>12.0f}"
            )
        backend.close()


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
