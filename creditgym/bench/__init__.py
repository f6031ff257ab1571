"""Benchmarks of the framework's own claims, run from recorded trajectories.

:mod:`credit_bench` scores every registered credit estimator's per-turn advantages against
ground truth (the environments' ``turn_labels``; Monte-Carlo turn values where records carry
them), :mod:`labels` gets those labels from the environment each record names, and :mod:`cli`
is ``creditgym credit-bench``; :mod:`mc_values` estimates Monte-Carlo turn values by continuing
records with a policy; :mod:`learning_stats` holds the statistics of ``benchmarks/learning.py``
(bootstrap intervals over seeds, the credit bench over a run's training iterations). This
package may import ``envs``, ``credit``, ``replay``, ``trajectory`` and ``agents``; only
``creditgym.cli`` (and the scripts in ``benchmarks/``) import it. Nothing is imported here, so
registering the subcommand costs the ``creditgym`` command nothing.
"""
