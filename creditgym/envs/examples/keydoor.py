"""KeyDoor: a long-horizon, non-search example: fetch a key, unlock a door, read a password.

Each task is a small grid of rooms generated from a seed: a wall splits it, and its one door is
locked. The agent starts on one side with the key somewhere near it; the vault, on the far side,
holds a note with the password. The task text shows the map; the agent acts with plain tools:
``move(direction)``, ``pick_up()``, ``open_door()``, and ends the episode with
``answer(password)``, which pays 1 when it is the vault's password (reading it needs a visit).
``password="done"`` gives every vault that one password: a small model can then answer without
copying a word from its context (tiny models never learned that copy), and the answer counts
only in the vault, since a constant is no secret. Layouts are kept only when the shortest
solution takes 10 to 30 actions.

Observations describe the current state only (the room, what lies there, the open ways, what the
agent carries, the door; with ``compass=True`` also how far east/west and north/south the next
goal lies: a small policy can then act on what it reads instead of planning on the map), and
the GiGPO anchor is exactly that state, so states recur across the members of a group (and
within an episode, after a detour). ``KeyDoorEnv.demonstrations`` is a
breadth-first-search expert that solves every task (``options={"mistake_prob": p}`` makes it take
a random step with probability ``p`` per move, then plan again); ``KeyDoorEnv.turn_labels``
replays a record through the same rules to label each turn useful, wasted or harmful (the credit
bench's ground truth). Tools mutate the episode's state, so ``tool_executor`` must stay
``"thread"`` and ``max_calls_per_turn`` 1.

Registered as ``creditgym/KeyDoor-v0``: ``gymnasium.make("creditgym/KeyDoor-v0", num_tasks=50)``.
"""

from __future__ import annotations

import random
import re
from collections import deque
from typing import Any, Literal

from creditgym.envs.contract import ended_unsuccessfully
from creditgym.envs.demonstration import call_text, scripted_demonstrations
from creditgym.envs.task import Task
from creditgym.envs.tool_env import ToolEnv
from creditgym.errors import ConfigError

MOVES = {"north": (0, -1), "south": (0, 1), "east": (1, 0), "west": (-1, 0)}
ACTIONS = [("move", d) for d in MOVES] + [("pick_up", ""), ("open_door", "")]
TOOLS = ("move", "pick_up", "open_door")
PASSWORDS = ("amber", "basalt", "cedar", "delta", "ember", "falcon", "garnet", "harbor", "indigo",
             "juniper", "kestrel", "lumen", "marble", "nectar", "onyx", "pepper", "quartz",
             "raven", "saffron", "tundra", "umber", "velvet", "willow", "xenon", "yarrow", "zephyr")
MIN_STEPS, MAX_STEPS = 10, 30

State = tuple  # ((x, y), has_key, door_open): hashable, so the expert can search over it


def load_layout(meta: dict[str, Any]) -> dict[str, Any]:
    """A task's metadata (JSON lists) as tuples and a wall set."""
    layout = {k: tuple(meta[k]) for k in ("door", "start", "key", "vault")}
    return {**meta, **layout, "walls": frozenset(map(tuple, meta["walls"]))}


def step_state(layout: dict[str, Any], state: State, tool: str, arg: str) -> tuple[State, str]:
    """The world's rules: the next state and what happened. The environment and the expert
    share them, so the expert's plans hold exactly."""
    pos, has_key, door_open = state
    if tool == "move":
        nxt = (pos[0] + MOVES[arg][0], pos[1] + MOVES[arg][1])
        if not (0 <= nxt[0] < layout["width"] and 0 <= nxt[1] < layout["height"]) \
                or nxt in layout["walls"]:
            return state, "A wall blocks the way."
        if nxt == layout["door"] and not door_open:
            return state, "The door is locked."
        return (nxt, has_key, door_open), f"You walk {arg}."
    if tool == "pick_up":
        if pos == layout["key"] and not has_key:
            return (pos, True, door_open), "You pick up the key."
        return state, "There is nothing to pick up here."
    door = layout["door"]
    if abs(pos[0] - door[0]) + abs(pos[1] - door[1]) != 1:
        return state, "There is no door next to you."
    if door_open:
        return state, "The door is already open."
    if not has_key:
        return state, "The door is locked and you have no key."
    return (pos, has_key, True), "You unlock the door with the key."


def describe(layout: dict[str, Any], state: State, *, compass: bool = False) -> str:
    """What the agent sees: the state, and nothing of the history (with ``compass``, also where
    the next goal lies: the key until it is held, then the door until it is open, then the
    vault)."""
    (x, y), has_key, door_open = state
    parts = [f"You are in room ({x}, {y})."]
    if (x, y) == layout["key"] and not has_key:
        parts.append("A key lies here.")
    ways = [d for d in MOVES if step_state(layout, ((x, y), True, True), "move", d)[0][0] != (x, y)]
    parts.append(f"Ways: {', '.join(ways)}.")
    parts.append("You carry the key." if has_key else "You carry nothing.")
    parts.append(f"The door is {'open' if door_open else 'locked'}.")
    if compass:
        name = "key" if not has_key else "door" if not door_open else "vault"
        parts.append(_bearing(name, (x, y), layout[name]))
    if (x, y) == layout["vault"]:
        # Last, and quoted: the password then sits a fixed number of tokens before the answer
        # that copies it, split as in the answer (no leading space in a byte-level tokenizer),
        # a copy a small model can learn (at a varying distance a 2-layer model never did).
        parts.append(f'This is the vault. A note reads: "{layout["password"]}".')
    return " ".join(parts)


def _bearing(name: str, here: tuple[int, int], there: tuple[int, int]) -> str:
    dx, dy = there[0] - here[0], there[1] - here[1]
    legs = [f"{abs(dx)} {'east' if dx > 0 else 'west'}"] if dx else []
    legs += [f"{abs(dy)} {'south' if dy > 0 else 'north'}"] if dy else []
    return f"The {name} is here." if not legs else f"The {name} is {' and '.join(legs)}."


def solve(layout: dict[str, Any], state: State) -> list[tuple[str, str]] | None:
    """The shortest action list from ``state`` into the vault (breadth-first), or None."""
    parent: dict[State, Any] = {state: None}
    frontier = deque([state])
    while frontier:
        current = frontier.popleft()
        if current[0] == layout["vault"]:
            plan = []
            while parent[current] is not None:
                current, action = parent[current]
                plan.append(action)
            return plan[::-1]
        for tool, arg in ACTIONS:
            nxt = step_state(layout, current, tool, arg)[0]
            if nxt not in parent:
                parent[nxt] = (current, (tool, arg))
                frontier.append(nxt)
    return None


def make_layout(rng: random.Random, width: int, height: int) -> dict[str, Any]:
    """A random solvable layout whose solution (answer included) takes 10 to 30 actions."""
    while True:
        wall_x = rng.randint(2, width - 3)
        door = (wall_x, rng.randrange(height))
        walls = {(wall_x, y) for y in range(height)} - {door}
        walls |= {(rng.randrange(width), rng.randrange(height)) for _ in range(rng.randint(0, 3))}
        walls -= {door}
        left = [(x, y) for x in range(wall_x) for y in range(height) if (x, y) not in walls]
        right = [(x, y) for x in range(wall_x + 1, width) for y in range(height)
                 if (x, y) not in walls]
        if len(left) < 2 or not right:
            continue
        start, key = rng.sample(left, 2)
        meta = {"width": width, "height": height, "walls": sorted(map(list, walls)),
                "door": list(door), "start": list(start), "key": list(key),
                "vault": list(rng.choice(right)), "password": rng.choice(PASSWORDS)}
        plan = solve(load_layout(meta), (start, False, False))
        if plan is not None and MIN_STEPS <= len(plan) + 1 <= MAX_STEPS:
            return {**meta, "shortest": len(plan) + 1}


def draw(layout: dict[str, Any]) -> str:
    """The map: ``#`` wall, ``D`` door, ``K`` key, ``V`` vault, ``@`` start, ``.`` room."""
    marks = {layout["door"]: "D", layout["key"]: "K", layout["vault"]: "V", layout["start"]: "@"}
    return "\n".join(
        "".join("#" if (x, y) in layout["walls"] else marks.get((x, y), ".")
                for x in range(layout["width"]))
        for y in range(layout["height"]))


def make_tasks(n: int = 200, seed: int = 0, width: int = 7, height: int = 5,
               password: str | None = None) -> list[Task]:
    """``n`` seeded tasks; the question is the instruction and the map (north is up); every
    vault's password is ``password`` when given (layouts are drawn as without it)."""
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        meta = make_layout(rng, width, height)
        if password is not None:
            meta["password"] = password
        question = ("Take the key, unlock the door, walk into the vault and answer with the "
                    "password written there. Map (north is up; # wall, D door, K key, V vault, "
                    f"@ you; rooms are (x, y) from the top left):\n{draw(load_layout(meta))}")
        tasks.append(Task(f"keydoor-{seed}-{i}", question, [meta["password"]], "keydoor", meta))
    return tasks


class KeyDoorEnv(ToolEnv):
    """The key-and-door world (see the module docstring)."""

    def __init__(self, config: dict | None = None, *, num_tasks: int = 200, seed: int = 0,
                 width: int = 7, height: int = 5, compass: bool = False,
                 password: str | None = None, syntax: Literal["xml", "json"] | None = None,
                 render_mode: str | None = None) -> None:
        if width < 5 or height < 1:
            raise ConfigError(f"KeyDoorEnv needs width >= 5 and height >= 1, got {width}x{height}")
        if password is not None and (not isinstance(password, str)
                                     or not re.fullmatch(r"[a-z]{1,20}", password)):
            raise ConfigError(f"KeyDoorEnv password must be one lowercase word (a-z, at most 20 "
                              f"letters) or None for a random word per vault, got {password!r}")
        config = {"max_turns": 40, **(config or {})}
        if config.get("max_calls_per_turn", 1) != 1:
            raise ConfigError("KeyDoorEnv: max_calls_per_turn must be 1 (moves happen in order)")
        self._layout: dict[str, Any] = {}
        self._state: State = ((0, 0), False, False)
        self._compass = bool(compass)
        self._fixed_password = password is not None

        def move(direction: Literal["north", "south", "east", "west"]) -> str:
            """Walk to the neighbouring room in this direction.

            Args:
                direction: north, south, east or west.
            """
            return self._act("move", direction)

        def pick_up() -> str:
            """Pick up the key, if it lies in this room."""
            return self._act("pick_up", "")

        def open_door() -> str:
            """Unlock the door next to you with the key."""
            return self._act("open_door", "")

        super().__init__([move, pick_up, open_door], config=config, syntax=syntax,
                         tasks=make_tasks(num_tasks, seed, width, height, password),
                         render_mode=render_mode)

    def _act(self, tool: str, arg: str) -> str:
        self._state, message = step_state(self._layout, self._state, tool, arg)
        return f"{message} {self._describe()}"

    def prompt(self, task: Task) -> str:
        # Called once per reset with the episode's task: the state starts here.
        self._layout = load_layout(task.metadata)
        self._state = (self._layout["start"], False, False)
        return f"{task.question}\n{self._describe()}"

    def _describe(self) -> str:
        return describe(self._layout, self._state, compass=self._compass)

    def anchor(self, task: Task, observation: str) -> str:
        return self._describe()

    def reward(self, task: Task, answer: str | None) -> dict[str, float]:
        metrics = super().reward(task, answer)
        in_vault = self._state[0] == self._layout["vault"]
        metrics["reached_vault"] = float(in_vault)
        if self._fixed_password and not in_vault and metrics["correct"]:
            # a password every vault shares is no secret: answered elsewhere it is a guess
            metrics = {**super().reward(task, None), "reached_vault": 0.0}
        return metrics

    @classmethod
    def turn_labels(cls, trajectory: Any) -> list[str] | None:
        """Ground truth for the credit bench: the recorded actions replayed through
        ``step_state``; a turn is useful when it shortens the shortest way to the vault
        (``solve``: nearer the key while it is not held, then nearer the door, then the vault;
        picking up the key; opening the door) or is the right answer, harmful when it ends the
        episode unsuccessfully, wasted otherwise. None without recorded tool calls or layout."""
        n = trajectory.n_turns
        if n == 0 or len(trajectory.tool_calls) != n:
            return None
        try:
            layout = load_layout(trajectory.task["metadata"])
        except (KeyError, TypeError):
            return None  # not a KeyDoor task: no layout to replay
        state: State = (layout["start"], False, False)
        distances: dict[State, float] = {}

        def to_go(s: State) -> float:
            if s not in distances:
                plan = solve(layout, s)
                distances[s] = float("inf") if plan is None else float(len(plan))
            return distances[s]

        labels = ["wasted"] * n
        for t, calls in enumerate(trajectory.tool_calls[:-1]):  # the last: by the outcome
            if not trajectory.valid[t] or len(calls) != 1 or calls[0].get("name") not in TOOLS:
                continue  # an invalid action changes nothing
            tool = calls[0]["name"]
            direction = str((calls[0].get("arguments") or {}).get("direction", ""))
            if tool == "move" and direction not in MOVES:
                continue
            nxt = step_state(layout, state, tool, direction)[0]
            if to_go(nxt) < to_go(state):
                labels[t] = "useful"
            state = nxt
        labels[-1] = "harmful" if ended_unsuccessfully(trajectory) else "useful"
        return labels

    @classmethod
    def demonstrations(cls, env_kwargs: dict, *, count: int, seed: int, options: dict):
        """A breadth-first-search expert; ``mistake_prob`` (default 0) of random moves."""
        unknown = sorted(set(options) - {"mistake_prob"})
        if unknown:
            raise ConfigError(f"unknown KeyDoor demonstrator option(s) {unknown}; "
                              "the only one is 'mistake_prob'")
        mistake_prob = float(options.get("mistake_prob", 0.0))
        env = cls(**env_kwargs)
        syntax = env.config.syntax

        def expert(task: Task, rng: random.Random):
            layout = load_layout(task.metadata)
            state = [(layout["start"], False, False)]

            def policy(observation: str, info: dict, turn: int) -> str:
                if turn == 0:
                    state[0] = (layout["start"], False, False)
                if state[0][0] == layout["vault"]:
                    return call_text(syntax, "answer", {"answer": layout["password"]})
                tool, arg = solve(layout, state[0])[0]
                if mistake_prob and rng.random() < mistake_prob:
                    tool, arg = "move", rng.choice(list(MOVES))
                state[0] = step_state(layout, state[0], tool, arg)[0]
                return call_text(syntax, tool, {"direction": arg} if tool == "move" else {})
            return policy

        return scripted_demonstrations(env, expert, count=count, seed=seed)
