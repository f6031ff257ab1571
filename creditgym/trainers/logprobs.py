"""From trajectories to padded training tensors, and per-token log-probs of a causal LM.

``pack_trajectories`` lays trajectories out as right-padded ``(batch, seq)`` tensors aligned with
``Trajectory.tokens()``: input ids, attention mask, loss mask (1 on generated tokens), the
rollout's log-probs placed at the generated positions, per-token advantages and each token's turn.
``Batch.micro_batches(max_tokens)`` cuts it into micro-batches of at most ``max_tokens`` padded
tokens each (a sequence is never split).

``sequence_logprobs`` returns, at position ``t``, ``log p(x_t | x_<t)`` computed as
``log_softmax(logits_{t-1} / temperature)[x_t]``: the same definition a rollout backend uses
for the log-prob of a token it sampled at that temperature. Position 0 has no prediction and
holds 0 (it is always a prompt token, loss mask 0).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from creditgym.errors import CreditGymError
from creditgym.trainers.loss import entropy_from_logits
from creditgym.trajectory import Trajectory


class TrainerInputError(CreditGymError, ValueError):
    """Trajectories or tensors handed to a trainer are unusable (empty, misaligned, missing)."""


@dataclass
class Batch:
    """Right-padded tensors of a list of trajectories; every ``(B, T)`` tensor is token-aligned."""

    input_ids: torch.Tensor
    """``(B, T)`` token ids, right-padded with ``pad_id``."""
    attention_mask: torch.Tensor
    """``(B, T)`` 1 on real tokens, 0 on padding."""
    loss_mask: torch.Tensor
    """``(B, T)`` float, 1 on the policy's generated tokens, 0 on prompt, observations, padding."""
    old_logprobs: torch.Tensor
    """``(B, T)`` float, the rollout's log-prob of each generated token (0 elsewhere)."""
    advantages: torch.Tensor
    """``(B, T)`` float, per-token advantages from ``Trajectory.advantages`` (0 where absent)."""
    turn_of_token: torch.Tensor
    """``(B, T)`` long, the turn of each token; -1 on the prompt and on padding."""
    n_turns: torch.Tensor
    """``(B,)`` long, turns of each trajectory."""
    lengths: torch.Tensor
    """``(B,)`` long, real (unpadded) length of each sequence."""
    index: torch.Tensor
    """``(B,)`` long, position of each row in the list given to ``pack_trajectories``."""

    @property
    def num_seqs(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_tokens(self) -> int:
        """Trained (loss-mask 1) tokens in the batch."""
        return int(self.loss_mask.sum().item())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, rows: Sequence[int] | torch.Tensor) -> Batch:
        """The given rows, with trailing all-padding columns trimmed."""
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        width = int(self.lengths[rows_t].max().item()) if rows_t.numel() else 0
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)[rows_t.to(getattr(self, f.name).device)]
            out[f.name] = v[:, :width] if v.dim() == 2 else v
        return Batch(**out)

    def micro_batches(self, max_tokens: int | None) -> list[Batch]:
        """Split into micro-batches of at most ``max_tokens`` padded tokens (rows x width).

        Rows are taken longest first, so rows of similar length share a micro-batch and padding
        stays small; a row longer than ``max_tokens`` forms a micro-batch on its own.
        ``None`` keeps the whole batch as one micro-batch.
        """
        if max_tokens is None:
            return [self]
        if max_tokens <= 0:
            raise TrainerInputError(f"micro_batch_tokens must be positive, got {max_tokens}")
        lengths = self.lengths.tolist()
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        groups: list[list[int]] = []
        for i in order:
            # longest first: the first row of a group sets its padded width
            if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= max_tokens:
                groups[-1].append(i)
            else:
                groups.append([i])
        return [self.select(g) for g in groups]


def pack_trajectories(trajs: Sequence[Trajectory], pad_id: int, *,
                      require_advantages: bool = False) -> Batch:
    """Right-padded tensors of ``trajs`` (see :class:`Batch`), on the CPU."""
    if len(trajs) == 0:
        raise TrainerInputError("no trajectories given; a training step needs at least one")
    seqs = [t.tokens() for t in trajs]
    width = max(len(s) for s in seqs)
    n = len(trajs)
    input_ids = np.full((n, width), pad_id, dtype=np.int64)
    attention = np.zeros((n, width), dtype=np.int64)
    loss_mask = np.zeros((n, width), dtype=np.float32)
    old_lp = np.zeros((n, width), dtype=np.float32)
    adv = np.zeros((n, width), dtype=np.float32)
    turn = np.full((n, width), -1, dtype=np.int64)
    for i, (t, ids) in enumerate(zip(trajs, seqs)):
        L = len(ids)
        if L == 0:
            raise TrainerInputError(f"trajectory {t.id!r} has no tokens")
        mask = t.loss_mask()
        if mask[0]:
            raise TrainerInputError(
                f"trajectory {t.id!r} has an empty prompt: its first token is generated, and a "
                f"causal LM cannot score the first token; give it at least one prompt token "
                f"(e.g. BOS)")
        input_ids[i, :L] = ids
        attention[i, :L] = 1
        loss_mask[i, :L] = mask
        if t.n_turns:
            old_lp[i, :L][mask.astype(bool)] = np.concatenate(
                [np.asarray(lp, dtype=np.float32) for lp in t.action_logprobs])
        turn[i, :L] = t.turn_of_token()
        if t.advantages is not None:
            a = np.asarray(t.advantages, dtype=np.float32)
            if a.shape != (L,):
                raise TrainerInputError(
                    f"trajectory {t.id!r}: {a.size} advantages but {L} tokens; advantages must "
                    f"be per token, aligned with Trajectory.tokens()")
            adv[i, :L] = a
        elif require_advantages:
            raise TrainerInputError(
                f"trajectory {t.id!r} has no advantages; run a credit estimator on its group "
                f"first (creditgym.credit) so every trajectory carries per-token advantages")
    return Batch(
        input_ids=torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(attention),
        loss_mask=torch.from_numpy(loss_mask),
        old_logprobs=torch.from_numpy(old_lp),
        advantages=torch.from_numpy(adv),
        turn_of_token=torch.from_numpy(turn),
        n_turns=torch.tensor([t.n_turns for t in trajs], dtype=torch.long),
        lengths=torch.tensor([len(s) for s in seqs], dtype=torch.long),
        index=torch.arange(n, dtype=torch.long),
    )


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def autocast_context(model: torch.nn.Module, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked for and the model is on CUDA; a no-op otherwise."""
    device = model_device(model)
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sequence_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``(B, T)`` log-probs ``log p(x_t | x_<t)`` (0 at t = 0); with entropy of each prediction.

    The entropy at position ``t`` is that of the temperature-scaled distribution that predicted
    ``x_t``. Log-probs and entropies are computed in float32 whatever the model's dtype.
    """
    if temperature <= 0:
        raise TrainerInputError(
            f"temperature must be > 0 to score tokens (got {temperature}); a greedy rollout has "
            f"no sampling distribution, score it at temperature 1")
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    logits = out.logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, 1:].unsqueeze(-1)
    # gather - logsumexp avoids materialising a second (B, T, V) log_softmax tensor
    token_lp = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    logprobs = torch.nn.functional.pad(token_lp, (1, 0))
    if not return_entropy:
        return logprobs
    with torch.no_grad():
        entropy = torch.nn.functional.pad(entropy_from_logits(logits), (1, 0))
    return logprobs, entropy
