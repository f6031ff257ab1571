"""Credit assignment: turn a group of trajectories into advantages (numpy only).

One module per estimator, each a pure function on flat arrays with its formula in the docstring
(see CREDIT.md): :mod:`grpo`, :mod:`rloo`, :mod:`gigpo` (with :mod:`similarity`), :mod:`igpo`
(with :mod:`igpo_probe`), :mod:`tempo`, :mod:`oprl`, :mod:`pure`. :mod:`adapter` maps trajectory
groups to those arrays and back to per-token arrays; :mod:`registry` selects an estimator by name
from a config and returns per-token advantages plus diagnostics.
"""

from creditgym.credit._arrays import CreditInputError
from creditgym.credit.registry import CreditResult, estimate, make_config

__all__ = ["CreditInputError", "CreditResult", "estimate", "make_config"]
