"""Demonstrations for the SFT warm start: the environment's demonstrator, and trajectory files.

Two steps, because a tiny model's tokenizer is itself trained on the demonstrations' text:

1. Text. ``play_demonstrations`` plays the ``Demonstration`` items an environment class's
   ``demonstrations(...)`` yields (a ready environment, a task, a reset seed and a policy
   ``(observation, info, turn) -> action``) through the real environment, recording every turn
   with ``Trajectory.add_turn`` and the end with ``Trajectory.finish`` (the same recorder as the
   rollout: tool calls, turn metrics and finish reasons included) but no token ids yet.
   ``load_demonstration_files`` reads trajectory JSONL files (``creditgym eval`` output, a
   script's); only their text counts, since their ids may come from another tokenizer.
2. Tokens. ``tokenize_demonstration`` re-records a text trajectory with the run's renderer the way
   a rollout would: the prompt rendered once with the chat template, each action's ids, each
   observation as the template delta (none after the last turn). So the warm-started policy sees,
   token for token, the layout it will later generate into.

``keep(task_id)`` filters tasks (the trainer passes "not held out"): no demonstration is ever of a
held-out task. ``gather_demonstrations`` does step 1 for a run's ``sft`` config: the two phases'
demonstrations (language modelling, then actions), from the demonstrator and the files;
``RunDemonstrations`` holds a run's, gathered once and shared by the tokenizer and the warm start.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from creditgym.errors import ConfigError
from creditgym.trajectory import Trajectory


def play_episode(demo: Any, *, traj_id: str, system_prompt: bool = True) -> Trajectory:
    """One episode of ``demo.policy`` on ``demo.task`` (reset with ``demo.seed``), as text."""
    env, task = demo.env, demo.task
    obs, info = env.reset(seed=demo.seed, options={"task": task})
    messages: list[dict[str, Any]] = []
    if system_prompt and info.get("system_prompt"):
        messages.append({"role": "system", "content": info["system_prompt"]})
    messages.append({"role": "user", "content": obs})
    traj = Trajectory(id=traj_id, group=task.id, task=task.to_dict(), seed=demo.seed,
                      prompt_ids=[], prompt_messages=messages)
    anchor, turn = info.get("anchor", obs), 0
    while True:
        action = demo.policy(obs, info, turn)
        obs, reward, terminated, truncated, info = env.step(action)
        traj.add_turn(action=action, action_ids=[], observation=obs, observation_ids=[],
                      reward=reward, anchor=anchor, info=info)
        anchor, turn = info.get("anchor", obs), turn + 1
        if terminated or truncated:
            break
    traj.finish(terminated=terminated, truncated=truncated)
    return traj


def play_demonstrations(
    demos: Iterable[Any], *, count: int, keep: Callable[[str], bool] | None = None,
    system_prompt: bool = True, id_prefix: str = "demo/", progress: bool = False,
) -> list[Trajectory]:
    """The first ``count`` demonstrations whose task ``keep`` accepts, played as text records;
    the iterator is closed afterwards (it closes the environments it opened)."""
    iterator = iter(demos)
    out: list[Trajectory] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=count, desc="demonstrations", unit="episode")
    try:
        while len(out) < count:
            demo = next(iterator, None)
            if demo is None:
                break
            if keep is not None and not keep(demo.task.id):
                continue
            out.append(play_episode(demo, traj_id=f"{id_prefix}{len(out)}",
                                    system_prompt=system_prompt))
            if bar is not None:
                bar.update(1)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        if bar is not None:
            bar.close()
    return out


def load_demonstration_files(paths: Sequence[str | Path], *,
                             keep: Callable[[str], bool] | None = None) -> list[Trajectory]:
    """The finished (not errored, at least one turn) records of trajectory JSONL ``paths`` whose
    task ``keep`` accepts. Records without texts cannot be re-tokenised: a ConfigError."""
    from creditgym.replay import read_trajectories

    out: list[Trajectory] = []
    for path in paths:
        for traj in read_trajectories(path):
            if traj.error is not None or traj.n_turns == 0:
                continue
            if keep is not None and not keep(str(traj.task.get("id", ""))):
                continue
            if not (traj.actions and traj.observations and traj.prompt_messages):
                raise ConfigError(
                    f"sft.demonstration_files: {path}: record {traj.id!r} has no action, "
                    "observation or prompt texts (written before they were recorded?); the warm "
                    "start re-tokenises demonstrations from their text, so record them again "
                    "with `creditgym eval`")
            out.append(traj)
    return out


def demonstration_texts(trajs: Iterable[Trajectory]) -> list[str]:
    """Every text of the records (prompt messages, actions, observations): tokenizer data."""
    texts: list[str] = []
    for traj in trajs:
        texts += [str(m.get("content", "")) for m in traj.prompt_messages]
        texts += traj.actions + traj.observations
    return texts


def tokenize_demonstration(traj: Trajectory, renderer: Any) -> Trajectory:
    """``traj`` re-recorded with ``renderer``'s token ids (see the module docstring)."""
    out = Trajectory(id=traj.id, group=traj.group, task=traj.task, seed=traj.seed,
                     prompt_ids=renderer.prompt_ids(traj.prompt_messages),
                     prompt_messages=traj.prompt_messages, env_id=traj.env_id,
                     env_kwargs=traj.env_kwargs, iteration=traj.iteration)
    last = traj.n_turns - 1
    for t, action in enumerate(traj.actions):
        ids = renderer.encode(action)
        info = {"valid": traj.valid[t],
                "metrics": traj.turn_metrics[t] if traj.turn_metrics else {},
                "tool_calls": traj.tool_calls[t] if traj.tool_calls else []}
        out.add_turn(action=action, action_ids=ids, observation=traj.observations[t],
                     observation_ids=[] if t == last else renderer.observation_ids(
                         traj.observations[t], ids),
                     reward=traj.rewards[t], anchor=traj.anchors[t], info=info,
                     finish_reason=traj.finish_reasons[t] if traj.finish_reasons else "stop")
    out.terminated, out.truncated = traj.terminated, traj.truncated
    out.metrics = dict(traj.metrics)
    return out


def gather_demonstrations(
    env_class: Any, env_kwargs: dict[str, Any], sft: Any, *, heldout: set[str],
    heldout_fraction: float, seed: int, system_prompt: bool = True, progress: bool = False,
    log: Callable[[str], None] = print, where: str = "env", files: list[Trajectory] | None = None,
) -> tuple[list[Trajectory], list[Trajectory]]:
    """(language-modelling, action) text demonstrations for ``sft`` (a ``SFTConfig``): with
    ``sft.lm_demonstrator`` and both phases, ``sft.demonstrations`` episodes of the demonstrator
    under ``{**demonstrator, **lm_demonstrator}`` and ``min(demonstrations, steps * batch_size)``
    under ``demonstrator``; else one set for both. The files' records join both phases. Tasks
    in ``heldout`` are never demonstrated. ``files``: the demonstration files' records when the
    caller has read them already (else they are read here)."""
    if sft.steps + sft.lm_steps <= 0:
        return [], []

    def keep(task_id: str) -> bool:
        return task_id not in heldout

    def play(options: dict[str, Any], count: int, prefix: str, seed: int) -> list[Trajectory]:
        if count <= 0:
            return []
        # Held-out tasks are skipped, so ask for enough to fill ``count`` with the rest.
        ask = math.ceil(count / (1 - heldout_fraction)) + 16 if heldout else count
        demos = env_class.demonstrations(env_kwargs, count=ask, seed=seed, options=dict(options))
        if demos is None:
            raise ConfigError(
                f"{where}: {env_class.__name__} has no demonstrator (its demonstrations() returns "
                "None); give sft.demonstration_files (e.g. `creditgym eval` output) with "
                "sft.demonstrations=0, or set sft.steps=0 and sft.lm_steps=0 (no warm start)")
        out = play_demonstrations(demos, count=count, keep=keep, system_prompt=system_prompt,
                                  id_prefix=prefix, progress=progress)
        if len(out) < count:
            log(f"warm start: the demonstrator gave {len(out)} of {count} episodes")
        return out

    if files is None:
        files = load_demonstration_files(sft.demonstration_files, keep=keep)
    if sft.lm_demonstrator is not None and sft.lm_steps > 0 and sft.steps > 0:
        lm = play({**sft.demonstrator, **sft.lm_demonstrator}, sft.demonstrations, "demo/lm/", seed)
        act = play(sft.demonstrator, min(sft.demonstrations, sft.steps * sft.batch_size),
                   "demo/act/", seed + len(lm))
        lm, act = lm + files, act + files
    else:
        lm = act = play(sft.demonstrator, sft.demonstrations, "demo/", seed) + files
    if not act:
        raise ConfigError(f"{where}: the warm start found no demonstrations of training tasks "
                          f"(sft.demonstration_files={list(sft.demonstration_files)}); give files "
                          "with training-task episodes, or set sft.steps=0 and sft.lm_steps=0")
    return lm, act


class RunDemonstrations:
    """A run's demonstrations (``cfg`` a ``TrainConfig``; tasks in ``heldout`` never shown),
    read and played at most once: the tiny model's tokenizer and the warm start both need them."""

    def __init__(self, cfg: Any, env_class: Any, env_kwargs: dict[str, Any], heldout: set[str],
                 *, progress: bool, log: Callable[[str], None]) -> None:
        self.cfg, self.env_class, self.env_kwargs = cfg, env_class, env_kwargs
        self.heldout, self.progress, self.log = heldout, progress, log
        self._files: list[Trajectory] | None = None
        self._text: tuple[list[Trajectory], list[Trajectory]] | None = None

    def files(self) -> list[Trajectory]:
        """The records of ``sft.demonstration_files`` of training tasks."""
        if self._files is None:
            self._files = load_demonstration_files(
                self.cfg.sft.demonstration_files, keep=lambda task_id: task_id not in self.heldout)
        return self._files

    def text(self) -> tuple[list[Trajectory], list[Trajectory]]:
        """(language-modelling, action) demonstrations as text records
        (``gather_demonstrations``)."""
        if self._text is None:
            cfg = self.cfg
            self._text = gather_demonstrations(
                self.env_class, self.env_kwargs, cfg.sft, heldout=self.heldout,
                heldout_fraction=cfg.eval.heldout_fraction, seed=cfg.seed,
                system_prompt=cfg.system_prompt, progress=self.progress, log=self.log,
                where=f"env.id={cfg.env.id}", files=self.files())
        return self._text

    def for_tokenizer(self) -> tuple[list[str] | None, list[Trajectory]]:
        """(the environment's corpus or None, the demonstrations a tiny tokenizer must also see):
        the demonstration files when the environment offers a corpus, else every demonstration."""
        corpus = self.env_class.corpus_texts(self.env_kwargs,
                                             demonstrator=dict(self.cfg.sft.demonstrator))
        if corpus is None:
            return None, [d for phase in self.text() for d in phase]
        return corpus, self.files()

    def release(self) -> None:
        """Drop the records (after the warm start they are not needed again)."""
        self._files = self._text = None
