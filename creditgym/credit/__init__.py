"""Credit assignment: turn a group of trajectories into advantages (numpy only).

One module per estimator, each a pure function on flat arrays with its formula in the docstring
(see CREDIT.md) plus its typed config and its registration: :mod:`grpo`, :mod:`rloo`,
:mod:`gigpo` (with :mod:`similarity`), :mod:`igpo` (with :mod:`igpo_probe`), :mod:`tempo`,
:mod:`oprl`, :mod:`pure`. :mod:`adapter` maps trajectory groups to those arrays and back to
per-token arrays; :mod:`registry` holds ``register_estimator`` and selects an estimator by name
from a config, returning per-token advantages plus diagnostics. A new estimator is one module
that calls ``register_estimator`` (importing it registers it).
"""

from creditgym.credit._arrays import CreditInputError
from creditgym.credit.registry import (
    ESTIMATORS,
    CreditResult,
    Estimator,
    estimate,
    get_estimator,
    make_config,
    register_estimator,
)

# Importing the built-in estimators registers them, in the order their names are listed in.
from creditgym.credit import grpo, rloo, gigpo, igpo, tempo, oprl, pure  # noqa: F401  isort:skip

__all__ = ["ESTIMATORS", "CreditInputError", "CreditResult", "Estimator", "estimate",
           "get_estimator", "make_config", "register_estimator"]
