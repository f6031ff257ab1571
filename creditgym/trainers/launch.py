"""``creditgym train --nproc N``: start N local ranks with ``torch.distributed.run``.

The command re-runs itself as ``python -m creditgym.cli train ...`` (without ``--nproc``) under
the engine behind ``torchrun``: standalone rendezvous on a free local port, N processes, no
restarts. Each rank sees torchrun's ``RANK``/``WORLD_SIZE``/... and joins the process group in
the trainer (``creditgym.trainers.distributed.init_distributed``). Starting the ranks with
``torchrun`` directly works the same way (and is how several nodes are used), e.g.::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m creditgym.cli train --config configs/default.yaml --set run_dir=/shared/run

When a rank dies (an error, a kill), torchrun's agent stops the others at once, and a rank
blocked in a collective gives up after the collective timeout (``CREDITGYM_DIST_TIMEOUT_S``);
:func:`launch_train` then raises :class:`LaunchError` naming the first failed rank and how it
ended, so the job ends with one clear message instead of hanging.
"""

from __future__ import annotations

from creditgym.errors import CreditGymError


class LaunchError(CreditGymError, RuntimeError):
    """A rank of a multi-process run failed; the job was stopped."""


def launch_train(train_argv: list[str], nproc: int) -> int:
    """Run ``creditgym train`` (``train_argv``, without ``--nproc``) on ``nproc`` local ranks;
    returns 0 when every rank finished, raises :class:`LaunchError` when one failed."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args([
        "--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
        "-m", "creditgym.cli", *train_argv])
    try:
        run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        others = sorted(r for r in e.failures if r != rank)
        raise LaunchError(
            f"rank {rank} of {nproc} {how}; the job was stopped"
            + (f" (rank(s) {others} failed after it)" if others else "")
            + "; its own error, if it printed one, is above. The run folder keeps its last "
              "checkpoint: continue with --resume (any --nproc)") from None
    return 0
