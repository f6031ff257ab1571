"""The README's example environment: executed end to end, registered, and checked by gymnasium."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import creditgym.envs  # noqa: F401  (registers the built-in ids)
from creditgym.envs.examples import calculator
from creditgym.envs.registration import register_envs

EXAMPLE = Path(calculator.__file__)
README = Path(__file__).resolve().parents[2] / "README.md"


def test_example_solves_its_tasks():
    env = calculator.CalculatorEnv()
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        a, b, c = map(int, re.findall(r"\d+", obs))
        obs, _, _, _, info = env.step(f"<calculate>{a} * {b} + {c}</calculate>")
        assert info["valid"] and obs.strip() == f"<result>\n{a * b + c}\n</result>"
        result = obs.split("\n")[2]
        obs, reward, term, _, info = env.step(f"<answer>{result}</answer>")
        assert term and reward == 1.0 and info["metrics"]["em"] == 1.0
    env.close()


@pytest.mark.parametrize(
    "expression,expected",
    [("(3 + 4) * 12", "84"), ("-2 / 4", "-0.5"), ("10 / 4 * 2", "5")],
)
def test_calculate(expression, expected):
    assert calculator.calculate(expression) == expected


@pytest.mark.parametrize("expression", ["__import__('os')", "2 ** 999999", "1 % 2", "x", "1/0", "(("])
def test_calculate_refuses_everything_else(expression):
    env = calculator.CalculatorEnv()
    env.reset(seed=0)
    obs, _, _, _, info = env.step(f"<calculate>{expression}</calculate>")
    assert not info["valid"] and "Error: tool calculate failed with" in obs


def test_registered_and_passes_check_env():
    assert "creditgym/Calculator-v0" in register_envs()
    register_envs()  # idempotent
    env = gymnasium.make("creditgym/Calculator-v0", config={"syntax": "json"})
    assert env.unwrapped.config.syntax == "json"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # check_env warnings are failures here
        check_env(env.unwrapped)
        check_env(gymnasium.make("creditgym/Calculator-v0").unwrapped)
    env.close()


def test_module_id_form():
    env = gymnasium.make("creditgym.envs:creditgym/Calculator-v0")
    obs, _ = env.reset(seed=1)
    assert obs.startswith("What is")
    env.close()


def test_readme_shows_the_example_verbatim():
    if not README.is_file() or "examples/calculator.py" not in README.read_text():
        pytest.skip("README.md has no tool-environment section yet")
    code = EXAMPLE.read_text()
    body = code.split('"""', 2)[2].strip()  # without the module docstring
    assert body in README.read_text(), "README's example must be creditgym/envs/examples/calculator.py"
