"""The README's example: a complete tool environment in about 20 lines (the tests execute it)."""
import ast
import operator
import random

from creditgym.envs import Task, ToolEnv, call_text, scripted_demonstrations

OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
       ast.Div: operator.truediv, ast.USub: operator.neg}


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / and parentheses.

    Args:
        expression: The expression, e.g. "(3 + 4) * 12".
    """
    def ev(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if type(getattr(node, "op", None)) not in OPS:
            raise ValueError("only numbers, + - * / and parentheses are allowed")
        if isinstance(node, ast.UnaryOp):
            return OPS[type(node.op)](ev(node.operand))
        return OPS[type(node.op)](ev(node.left), ev(node.right))
    value = ev(ast.parse(expression, mode="eval").body)
    return str(int(value)) if value == int(value) else str(round(value, 10))


def make_tasks(n: int = 100, seed: int = 0) -> list[Task]:
    rng = random.Random(seed)
    nums = [(rng.randint(10, 99), rng.randint(10, 99), rng.randint(100, 999)) for _ in range(n)]
    return [Task(f"calc-{i}", f"What is {a} * {b} + {c}?", [str(a * b + c)], "calculator")
            for i, (a, b, c) in enumerate(nums)]


class CalculatorEnv(ToolEnv):
    def __init__(self, **kwargs):
        super().__init__([calculate], tasks=make_tasks(), **kwargs)

    @classmethod
    def demonstrations(cls, env_kwargs, *, count, seed, options):
        """Optional, for a warm start: an expert that knows the expression and the answer."""
        env = cls(**env_kwargs)

        def expert(task, rng):
            expression = task.question.removeprefix("What is ").removesuffix("?")
            calls = [call_text(env.config.syntax, "calculate", {"expression": expression}),
                     call_text(env.config.syntax, "answer", {"answer": task.golden_answers[0]})]
            return lambda observation, info, turn: calls[min(turn, 1)]
        return scripted_demonstrations(env, expert, count=count, seed=seed)
