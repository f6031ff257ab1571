"""Trajectory files and the tools that work on them after a run.

``io``: the crash-safe JSONL ``TrajectoryWriter``, readers that tolerate a torn last line, and run
metadata; ``show``: terminal views; ``verify``: re-step records through their environments and
report divergences; ``rescore``: new rewards and advantages into a new file; ``html``: a
self-contained page to browse trajectories; ``export``: flat tables for pandas and ``datasets``;
``cli``: the ``creditgym replay`` subcommands.
"""

from creditgym.replay.io import (
    TornLineWarning,
    TrajectoryWriter,
    iter_trajectories,
    meta_path,
    read_metadata,
    read_trajectories,
    run_metadata,
    write_trajectories,
)

__all__ = [
    "TornLineWarning",
    "TrajectoryWriter",
    "iter_trajectories",
    "meta_path",
    "read_metadata",
    "read_trajectories",
    "run_metadata",
    "write_trajectories",
]
