"""The SFT warm start of ``creditgym train`` (before RL): imitation of the environment's
demonstrator, first on whole transcripts (``sft.lm_steps``), then on the actions (``sft.steps``).
"""

from __future__ import annotations

import random
from typing import Any

from creditgym.replay import TrajectoryWriter, run_metadata
from creditgym.trainers.demos import tokenize_demonstration
from creditgym.trainers.distributed import barrier, world
from creditgym.trainers.lora import plain_model
from creditgym.trainers.optim import make_optimizer
from creditgym.trainers.sft import sft_step


def warm_start(trainer: Any) -> dict[str, float]:
    """The SFT warm start of ``trainer`` (a :class:`creditgym.trainers.loop.Trainer`): the
    language-modelling steps, then the action steps, data parallel over the ranks (each takes
    every ``world``-th demonstration of the sampled batch); writes ``demonstrations.jsonl`` and
    ``sft-model/`` (rank 0) and refreshes the rollout copy. Returns its summary metrics."""
    sft = trainer.cfg.sft
    if sft.steps + sft.lm_steps <= 0:
        return {}
    text_lm, text_act = trainer.demos.text()
    tokenized = {id(t): tokenize_demonstration(t, trainer.renderer)
                 for t in {id(t): t for t in text_lm + text_act}.values()}
    lm_demos = [tokenized[id(t)] for t in text_lm]
    act_demos = [tokenized[id(t)] for t in text_act]
    # Kept with the run, so what the warm start imitated can be replayed and inspected.
    path = trainer.run_dir / "demonstrations.jsonl"
    if trainer.main:
        path.unlink(missing_ok=True)  # a warm start is redone whole; never append to a half
        with TrajectoryWriter(path, run_metadata(phase="sft",
                                                 lm_demonstrator=sft.lm_demonstrator)) as w:
            w.write_many(list(tokenized.values()))
    total = sft.lm_steps + sft.steps
    optimizer, scheduler = make_optimizer(trainer.model, trainer.cfg.optim(sft.lr, total))
    rng = random.Random(trainer.cfg.seed)
    steps = range(total)
    if trainer.progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="SFT warm start", unit="step")
    metrics: dict[str, float] = {}
    for step in steps:
        demos = lm_demos if step < sft.lm_steps else act_demos
        batch = rng.sample(demos, min(sft.batch_size, len(demos)))[trainer.dist.rank::world()]
        metrics = sft_step(trainer.model, optimizer, scheduler, batch, pad_id=trainer.pad_id,
                           micro_batch_tokens=trainer.cfg.policy.micro_batch_tokens,
                           all_tokens=step < sft.lm_steps)
        if trainer.progress:
            steps.set_postfix(loss=f"{metrics['loss']:.3f}")
    # Saved as a plain model folder so other runs (e.g. benchmarks/learning.py comparing
    # credit estimators) can start from the same warm start with model.path.
    trainer._refresh_rollout_model()
    if trainer.main:
        # LoRA: the adapters merged in, a plain folder (the KL reference and vLLM load it)
        plain_model(trainer.rollout_model).save_pretrained(trainer.run_dir / "sft-model")
        trainer.tokenizer.save_pretrained(trainer.run_dir / "sft-model")
    barrier()  # the KL reference and vLLM load it on every rank
    trainer.demos.release()
    return {"sft_loss": metrics.get("loss", float("nan")),
            "sft_demo_success": sum(bool(d.success) for d in act_demos) / len(act_demos)}
