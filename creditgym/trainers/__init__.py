"""Trainers: policy-gradient updates, SFT warm start, implicit-PRM training, checkpoints, the loop."""
