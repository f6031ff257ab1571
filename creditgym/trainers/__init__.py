"""Trainers: policy-gradient updates, SFT warm start, implicit-PRM training, checkpoints, the loop.

The public names below (``__all__``) are imported lazily, on first use, so ``import
creditgym.trainers`` does not load torch until a trainer is used. ``Trainer(TrainConfig)`` is
what ``creditgym train`` runs.
"""

from __future__ import annotations

from creditgym.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "creditgym.trainers.loop": ("Trainer",),
    "creditgym.trainers.config": ("TrainConfig", "check_train_config"),
    "creditgym.trainers.checkpoint": (
        "CheckpointError", "latest_checkpoint", "load_checkpoint", "save_checkpoint",
    ),
    "creditgym.trainers.credit_inputs": ("register_input",),
    "creditgym.trainers.demos": ("load_demonstration_files", "play_demonstrations"),
    "creditgym.trainers.dpo": ("prm_update",),
    "creditgym.trainers.heldout": ("heldout_ids",),
    "creditgym.trainers.logprobs": ("TrainerInputError", "pack_trajectories", "sequence_logprobs"),
    "creditgym.trainers.loss": ("kl_penalty", "policy_loss"),
    "creditgym.trainers.optim": ("OptimConfig", "make_optimizer"),
    "creditgym.trainers.plot": ("plot_run",),
    "creditgym.trainers.policy_step": ("PolicyUpdateConfig", "policy_update"),
    "creditgym.trainers.sft": ("sft_step",),
})
