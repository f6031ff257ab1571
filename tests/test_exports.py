"""The packages' public names: every name in ``__all__`` resolves, none is shadowed by a
submodule of the same name, and importing a package loads no heavy library."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

PACKAGES = ("creditgym.agents", "creditgym.trainers", "creditgym.envs")


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves_and_no_submodule_shadows_one(name):
    package = importlib.import_module(name)
    assert package.__all__, f"{name} exports nothing"
    submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    # ``import pkg.rollout`` would rebind ``pkg.rollout`` to the module: a name both exported
    # and a submodule means different things depending on import order
    assert not set(package.__all__) & submodules
    for public in package.__all__:
        value = getattr(package, public)
        assert value is not None and not isinstance(value, type(package)), public
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr(package, "nope")


def test_importing_the_packages_loads_no_torch():
    code = ("import sys, creditgym.agents, creditgym.trainers, creditgym.envs; "
            "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
