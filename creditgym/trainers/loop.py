"""``creditgym train``: SFT warm start, then rollout -> credit -> policy update, with evaluation.

Any environment: ``env.id`` (a registered id or ``module:attr``) with ``env.kwargs`` and
``env.wrappers``; the environment class supplies its stop strings (``stop_strings``), how its
episode metrics aggregate (``aggregate_metrics``) and, optionally, a demonstrator
(``demonstrations``). Held-out tasks come from ``eval.env_kwargs`` (e.g. a test split) or are a
deterministic ``eval.heldout_fraction`` of the environment's tasks, chosen by task id; they are
never trained on, demonstrated or fitted to (the run's ``heldout.json`` and a note in its
``config.yaml`` say which).

One iteration: sample training tasks, roll out ``group_size`` trajectories each with the current
policy (the in-process backend shares the trainer's model, so weights are in sync by
construction), turn outcomes into per-token advantages with the configured credit estimator,
and take one policy-gradient update (with ``rl.off_policy_steps: 1`` the next iteration's
rollouts are generated during it: ``creditgym.trainers.prefetch``). A run writes ``run_dir``:
``config.yaml``, ``checkpoints/`` (atomic, resumable), ``metrics.jsonl`` (one row per
iteration), ``rollouts.jsonl`` (every trajectory), ``eval-*.jsonl`` and ``learning_curves.png``.

Resuming (``--resume``) loads the newest checkpoint (model, optimiser, scheduler, RNG states,
iteration, metrics history) and continues. Sampling randomness derives from (seed, iteration,
task, member, turn) (see ``creditgym.agents.rollout.stream_seed``) and, with the default
``rollout.batching: rounds``, requests form the same batches in every run, so identical runs,
and a resumed run and the uninterrupted one, write identical records.

Crash consistency: an iteration's records go to ``rollouts.jsonl`` after its update, each with
its ``iteration`` and the ``advantages`` that update used; the iteration is committed by the
next checkpoint. On resume, records of iterations the checkpoint does not include (and their
``eval-itN.jsonl`` files) are dropped by an atomic rewrite before those iterations are redone,
so every iteration appears exactly once. Evaluation files are written whole (temp + rename), and
the whole config is checked (``check_train_config``) before anything is created.

Several ranks (``creditgym train --nproc N``, or under ``torchrun``): the policy is trained
FSDP2-sharded, each rank rolls out its share of the groups with an unsharded copy, rank 0 gathers
the records and alone writes the run folder, and checkpoints are DCP (any world size resumes
them); ``creditgym.trainers.parallel`` has the details.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from creditgym.agents.backend import SamplingParams
from creditgym.agents.chat import ChatRenderer
from creditgym.agents.rollout import RolloutConfig, rollout, stream_seed
from creditgym.config import to_plain
from creditgym.credit.registry import estimate, make_config
from creditgym.envs.factory import env_factory
from creditgym.errors import ConfigError
from creditgym.evaluate import summarize
from creditgym.files import atomic_write_text
from creditgym.replay import TrajectoryWriter, run_metadata
from creditgym.replay.rescore import group_trajectories
from creditgym.trainers.checkpoint import latest_checkpoint
from creditgym.trainers.dist_checkpoint import load_sharded, save_sharded
from creditgym.trainers.distributed import (
    barrier,
    full_state_dict,
    init_distributed,
    is_main,
    world,
)
from creditgym.trainers.config import TrainConfig, check_train_config
from creditgym.trainers.demos import RunDemonstrations
from creditgym.trainers.heldout import evaluate, heldout_ids
from creditgym.trainers.lora import apply_lora, iter_plain_weights
from creditgym.trainers.credit_inputs import (
    credit_inputs,
    input_problems,
    record_inputs,
    setup_inputs,
)
from creditgym.trainers.model_setup import (
    build_base_model,
    load_policy,
    make_rollout_backend,
    starting_model_dir,
    tokenizer_texts,
)
from creditgym.trainers import parallel
from creditgym.trainers.optim import make_optimizer
from creditgym.trainers.policy_step import policy_update
from creditgym.trainers.prefetch import RolloutPrefetch
from creditgym.trainers.run_files import brief, drop_uncommitted, write_history
from creditgym.trainers.warm_start import warm_start


class Trainer:
    """Holds a run's state; ``run()`` executes (or resumes) the whole job."""

    def __init__(self, config: TrainConfig, *, resume: bool = False, progress: bool = True) -> None:
        check_train_config(config, resume=resume)  # before anything is created
        self.cfg = config
        self.run_dir = Path(config.run_dir)
        self.resume = resume
        self.dist = init_distributed()  # several ranks under torchrun; see parallel.py
        self.main = is_main()
        self.progress = progress and self.main  # rank 0 alone prints and writes run files
        self.log = (lambda msg: print(msg, flush=True)) if self.progress else (lambda msg: None)
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.train_kwargs = dict(config.env.kwargs)
        self.test_kwargs = {**config.env.kwargs, **config.eval.env_kwargs}
        self.history: list[dict[str, Any]] = []
        self.evals: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ setup

    def _setup(self) -> None:
        if not self.resume and (self.run_dir / "checkpoints").exists():
            raise ConfigError(
                f"run_dir {self.run_dir} already holds a run (it has checkpoints/); pass --resume "
                "to continue it, or start a new run elsewhere with --set run_dir=NEW_DIR "
                "(nothing there was changed)")
        env = self.cfg.env
        # Resolves the id and the wrappers (a bad wrapper fails here, before the run folder);
        # the first environment is built on the first call.
        self.make_train_env = env_factory(env.id, self.train_kwargs, env.wrappers)
        if world() > 1 and min(self.cfg.rl.tasks_per_iteration, self.cfg.sft.batch_size) < world():
            raise ConfigError(f"{world()} ranks need rl.tasks_per_iteration and sft.batch_size of "
                              f"at least {world()} (every rank trains on its share of a batch)")
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        probe = self.make_train_env()
        self.env_class = type(probe.unwrapped)
        self.stop = tuple(probe.unwrapped.stop_strings)
        tasks = list(probe.unwrapped.tasks)
        if self.cfg.eval.env_kwargs:
            self.heldout: set[str] = set()
            self.make_test_env = env_factory(env.id, self.test_kwargs, env.wrappers)
            self._test_envs = [self.make_test_env()]
            self.train_tasks, self.test_tasks = tasks, list(self._test_envs[0].unwrapped.tasks)
            note = f"held out: the tasks of eval.env_kwargs={self.cfg.eval.env_kwargs}"
        else:
            self.heldout = heldout_ids([t.id for t in tasks], self.cfg.eval.heldout_fraction,
                                       where=f"env.id={env.id}")
            self.make_test_env, self._test_envs = self.make_train_env, []
            self.train_tasks = [t for t in tasks if t.id not in self.heldout]
            self.test_tasks = [t for t in tasks if t.id in self.heldout]
            note = (f"held out: {len(self.heldout)} of {len(tasks)} tasks "
                    f"(eval.heldout_fraction={self.cfg.eval.heldout_fraction}, by task id; "
                    "listed in heldout.json)")
        if self.main:
            atomic_write_text(self.run_dir / "config.yaml", f"# {note}\n"
                              + yaml.safe_dump(to_plain(self.cfg), sort_keys=False))
            atomic_write_text(self.run_dir / "heldout.json", json.dumps(
                {"note": note, "task_ids": [t.id for t in self.test_tasks]}, indent=1) + "\n")
        self.demos = RunDemonstrations(self.cfg, self.env_class, self.train_kwargs, self.heldout,
                                       progress=self.progress, log=self.log)
        parallel.main_first(lambda: build_base_model(  # rank 0 builds it, if it must
            self.cfg, self.run_dir, lambda: self._tokenizer_texts(probe), self.log))
        model, self.tokenizer = load_policy(self.cfg, self.run_dir)
        model = apply_lora(model, self.cfg.model.lora, seed=self.cfg.seed)
        off_policy = self.cfg.rl.off_policy_steps > 0  # generation needs its own copy then
        self.model, self.rollout_model = parallel.prepare_policy(
            model, bf16=self.cfg.policy.bf16, cpu_offload=self.cfg.model.cpu_offload,
            separate_rollout_copy=off_policy)
        self.prefetch = RolloutPrefetch(self.collect) if off_policy else None
        self._train_envs = [probe]
        self.pad_id = self.tokenizer.pad_token_id
        self.renderer = ChatRenderer(self.tokenizer)
        self._backend = None
        self.ref_model = None
        iters = self.cfg.rl.iterations * self.cfg.policy.ppo_epochs * self.cfg.policy.mini_batches
        self.optimizer, self.scheduler = make_optimizer(self.model, self.cfg.optim(self.cfg.rl.lr, iters))
        self.credit = make_config(self.cfg.credit)
        self.prm = None  # an input provider's setup makes it (OPRL's implicit PRM), in run()
        problems = input_problems(self.credit, self.cfg.record_inputs)
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def backend(self):
        """The rollout backend, built on first use (after the warm start: vLLM loads a folder)."""
        if self._backend is None:
            self._backend = make_rollout_backend(self.cfg, self.rollout_model, self.tokenizer,
                                                 self.run_dir)
        return self._backend

    def _refresh_rollout_model(self) -> None:
        if self.rollout_model is not self.model:  # several ranks: from the sharded policy
            self.rollout_model.load_state_dict(full_state_dict(self.model))

    def _sync_weights(self) -> None:
        if getattr(self.backend, "model", None) is self.rollout_model:
            self._refresh_rollout_model()  # the transformers backend generates with the copy
            return
        # An engine with weights of its own (vLLM, one per rank; it wakes itself if asleep):
        # streamed weight by weight from the trained (sharded) model, LoRA merged.
        self.backend.load_weights(iter_plain_weights(self.model))

    def trainable_copy(self) -> torch.nn.Module:
        """A separately trained copy of the current policy (sharded with several ranks)."""
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return parallel.trainable_copy(self.rollout_model, trainable, bf16=self.cfg.policy.bf16,
                                       cpu_offload=self.cfg.model.cpu_offload)

    def _reference(self):
        """The frozen KL reference (the warm-started policy), loaded only when kl_coef > 0."""
        if self.cfg.policy.kl_coef <= 0:
            return None
        if self.ref_model is None:
            from transformers import AutoModelForCausalLM

            path = starting_model_dir(self.cfg, self.run_dir)
            self.ref_model = parallel.frozen_copy(AutoModelForCausalLM.from_pretrained(
                str(path)).to(next(self.rollout_model.parameters()).device),
                bf16=self.cfg.policy.bf16, cpu_offload=self.cfg.model.cpu_offload)
        return self.ref_model

    def test_env(self):
        """A held-out environment (the first one built at setup, then new ones)."""
        return self._test_envs.pop() if self._test_envs else self.make_test_env()

    def _train_env(self):
        return self._train_envs.pop() if self._train_envs else self.make_train_env()

    # ------------------------------------------------------------------ phases

    def _tokenizer_texts(self, probe) -> list[str]:
        """A tiny tokenizer's texts: the environment's corpus and the demonstration files when it
        offers a corpus, else the training questions and every demonstration."""
        corpus, demos = self.demos.for_tokenizer()
        return tokenizer_texts(probe, self.train_tasks, demos, corpus=corpus)

    def warm_start(self) -> dict[str, float]:
        """SFT on the demonstrations (``creditgym.trainers.warm_start``); its summary metrics."""
        return warm_start(self)

    def evaluate(self, name: str, updates: int) -> dict[str, float]:
        """Roll out the held-out tasks (``creditgym.trainers.heldout.evaluate``)."""
        return evaluate(self, name, updates)

    def collect(self, it: int) -> tuple[list, list, float]:
        """Iteration ``it``'s tasks, this rank's rollouts of them (with the rollout copy and the
        backend only: safe in the prefetch thread) and the seconds they took."""
        rl = self.cfg.rl
        t0 = time.perf_counter()
        tasks = random.Random(self.cfg.seed * 100_003 + it).sample(
            self.train_tasks, min(rl.tasks_per_iteration, len(self.train_tasks)))
        config = RolloutConfig(
            group_size=rl.group_size, max_context_tokens=rl.max_context_tokens,
            system_prompt=self.cfg.system_prompt, batching=self.cfg.rollout.batching,
            sampling=SamplingParams(max_new_tokens=rl.max_new_tokens, temperature=rl.temperature,
                                    stop=self.stop,
                                    seed=stream_seed(self.cfg.seed, "train", it)))
        mine = parallel.share(len(tasks))  # whole groups per rank (parallel.py)
        trajs = rollout(self._train_env, [tasks[i] for i in mine], self.backend, self.renderer,
                        config, seed=self.cfg.seed + it, group_prefix=f"it{it:04d}/",
                        env_id=self.cfg.env.id, env_kwargs=self.train_kwargs, task_keys=mine)
        return tasks, trajs, time.perf_counter() - t0

    def _prefetches_after(self, it: int) -> bool:
        """Whether iteration ``it + 1``'s rollouts run during ``it``'s update (off-policy: not
        before an evaluation, which must see the updated policy, nor after the last one)."""
        every = self.cfg.eval.every
        return (self.prefetch is not None and it + 1 < self.cfg.rl.iterations
                and not (every and (it + 1) % every == 0))

    def iteration(self, it: int, writer: TrajectoryWriter) -> dict[str, Any]:
        rl = self.cfg.rl
        t0 = time.perf_counter()
        if self.prefetch is not None:
            (tasks, trajs, t_rollout), stale = self.prefetch.take(it)
        else:
            (tasks, trajs, t_rollout), stale = self.collect(it), False
        t_wait = time.perf_counter() - t0
        ok = [t for t in trajs if t.error is None and t.n_turns > 0]
        inputs, prm_metrics = credit_inputs(self, self.credit, ok, self.cfg.record_inputs)
        record_inputs(ok, inputs)  # kept with the records, for `creditgym credit-bench`
        result = estimate(group_trajectories(ok), self.credit, inputs)
        result.assign()
        ahead = self._prefetches_after(it)
        if ahead:  # the copy gets W_it (the inputs above saw the weights that sampled)
            self._sync_weights()
            self.prefetch.start(it + 1)
        if self.cfg.rollout.vllm_sleep:  # the engine's memory goes to the update
            self.backend.sleep()
        t1 = time.perf_counter()
        update = policy_update(self.model, self.optimizer, self.scheduler, ok,
                               dataclasses.replace(self.cfg.policy, temperature=rl.temperature),
                               ref_model=self._reference(), pad_id=self.pad_id)
        if not ahead:
            self._sync_weights()
        if world() > 1:  # rank 0 writes every rank's records; credit diagnostics of them all
            gathered = parallel.gather_trajectories(
                trajs, [f"it{it:04d}/{t.id}" for t in tasks], extra=inputs)
            if gathered is None:
                return {}
            trajs, parts = gathered
            ok, inputs = [t for t in trajs if t.advantages is not None], parallel.merged_inputs(parts)
            result = estimate(group_trajectories(ok), self.credit, inputs)
        # Written after the update, with the advantages it used (errored trajectories were not
        # trained on: theirs stay null); committed by the next checkpoint (see run()).
        for t in trajs:
            t.iteration = it
        writer.write_many(trajs)
        summary = summarize(trajs, self.env_class.aggregate_metrics)
        row = {"iteration": it, **{f"rollout/{k}": v for k, v in summary.items()},
               **{f"credit/{k}": v for k, v in result.diagnostics.items()},
               **{f"update/{k}": v for k, v in update.items()}, **prm_metrics,
               "rollout/policy_lag": float(stale), "time/rollout_s": t_rollout,
               "time/rollout_wait_s": t_wait, "time/update_s": time.perf_counter() - t1}
        self.log(f"iteration {it}: {brief(summary)}, loss {update['loss']:.4f}, "
                 f"|A| {result.diagnostics.get('mean_abs_adv_token', 0):.3f}, "
                 f"{time.perf_counter() - t0:.1f}s")
        return row

    # ------------------------------------------------------------------ the job

    def run(self) -> dict[str, Any]:
        self._setup()
        ckpt_dir = self.run_dir / "checkpoints"
        start = 0
        latest = latest_checkpoint(ckpt_dir) if self.resume else None
        if latest is not None:
            extra = load_sharded(latest, model=self.model, optimizer=self.optimizer,
                                 scheduler=self.scheduler)
            self._refresh_rollout_model()
            start, self.history, self.evals = extra["iteration"], extra["history"], extra["evals"]
            setup_inputs(self, self.credit, self.cfg.record_inputs)
            self._load_prm(ckpt_dir)
            self.log(f"resumed from {latest} at iteration {start}")
        else:
            self.evals["warm_start"] = self.warm_start()
            # after the warm start: the implicit PRM starts as a copy of the warm-started policy
            setup_inputs(self, self.credit, self.cfg.record_inputs)
            if self.cfg.eval.before:
                self.evaluate("before", 0)
            self._checkpoint(ckpt_dir, 0)
        if self.main:
            drop_uncommitted(self.run_dir, start, self.log)
        self._write_history()
        with (TrajectoryWriter(self.run_dir / "rollouts.jsonl", run_metadata(run=str(self.run_dir)))
              if self.main else contextlib.nullcontext()) as w:
            for it in self._iterations(start):
                row = self.iteration(it, w)
                if self.cfg.eval.every and (it + 1) % self.cfg.eval.every == 0:
                    row.update({f"eval/{k}": v
                                for k, v in self.evaluate(f"it{it + 1}", it + 1).items()})
                self.history.append(row)
                if (it + 1) % self.cfg.checkpoint_every == 0 or it + 1 == self.cfg.rl.iterations:
                    self._checkpoint(ckpt_dir, it + 1)
                self._write_history()
        self.evaluate("after", self.cfg.rl.iterations)
        self._checkpoint(ckpt_dir, self.cfg.rl.iterations)
        self._write_history()
        from creditgym.trainers.plot import plot_run

        plot = plot_run(self.run_dir) if self.main else None
        if self._backend is not None:
            self._backend.close()
        barrier()
        return {"before": self.evals.get("before"), "after": self.evals.get("after"), "plot": str(plot),
                "run_dir": str(self.run_dir)}

    def _iterations(self, start: int):
        try:
            yield from range(start, self.cfg.rl.iterations)
        finally:  # also when an iteration raised: no rollout thread outlives the loop
            if self.prefetch is not None:
                self.prefetch.close()

    def _checkpoint(self, ckpt_dir: Path, iteration: int) -> None:
        extra = {"iteration": iteration, "history": self.history, "evals": self.evals}
        save_sharded(ckpt_dir, iteration, model=self.model, optimizer=self.optimizer,
                     scheduler=self.scheduler, extra=extra, keep_last=self.cfg.keep_checkpoints)
        if self.prm is not None:
            save_sharded(ckpt_dir / "prm", iteration, model=self.prm, optimizer=self.prm_optimizer,
                         scheduler=self.prm_scheduler, keep_last=self.cfg.keep_checkpoints)

    def _load_prm(self, ckpt_dir: Path) -> None:
        if self.prm is not None and (latest := latest_checkpoint(ckpt_dir / "prm")) is not None:
            load_sharded(latest, model=self.prm, optimizer=self.prm_optimizer,
                         scheduler=self.prm_scheduler, restore_rng=False)

    def _write_history(self) -> None:
        if self.main:  # rank 0 alone writes run files
            write_history(self.run_dir, self.history, self.evals)
