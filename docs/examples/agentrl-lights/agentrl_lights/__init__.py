"""Lights Out on a row, as an agentrl env adapter: the example of docs/env-contract.md.

Task ids: `lights/row-{n}/seed-{k}`. The start is `1..max_presses` random presses away from all
lights off, drawn from the adapter's own `random.Random` seeded by the task id: never the
process-global `random`, which other episodes in the same worker process draw from too.

What it gives agentrl:
- `text`: what the last press did and the row (`Lights: ON off ON off off`); `goal`: turn every light off;
- `admissible`: `press 1` .. `press n`, in order; `anchor`: the row alone (the state);
- `info["expert_plan"]`: the shortest list of presses that solves the row from here (the
  *remaining* plan, recomputed at every step); `info["walkthrough"]` at reset: the plan from the start;
- reward 1.0 on the step that turns the last light off (plus the `step_reward` option on every step).
"""

from __future__ import annotations

import itertools
import random
import re

from agentrl.envs import Observation, TextEnv, Transition
from agentrl.errors import UserError

_TASK = re.compile(r"lights/row-(\d+)/seed-(\d+)")
GOAL = "Turn every light off."


def parse_task(task: str) -> tuple[int, int]:
    m = _TASK.fullmatch(task)
    if not m or not 3 <= int(m[1]) <= 9:
        raise UserError(f"bad lights task id '{task}' (expected lights/row-N/seed-K with N = 3-9)")
    return int(m[1]), int(m[2])


def press(row: tuple[int, ...], i: int) -> tuple[int, ...]:
    """Toggle light i (0-based) and its neighbours."""
    return tuple(v ^ (abs(j - i) <= 1) for j, v in enumerate(row))


def solve(row: tuple[int, ...]) -> list[int] | None:
    """The shortest set of presses (0-based, ascending) that turns every light off, or None."""
    n = len(row)
    for k in range(n + 1):
        for presses in itertools.combinations(range(n), k):
            state = row
            for i in presses:
                state = press(state, i)
            if not any(state):
                return list(presses)
    return None


class LightsEnv(TextEnv):
    """The adapter. agentrl makes it with the recipe's `env.options` as keyword arguments."""

    name = "lights"
    # adapter attributes (docs/env-contract.md): the neutral defaults would do; these say what fits
    system_intro = "You are solving a Lights Out puzzle."
    action_first_line = True  # commands are one line
    action_max_chars = 40

    def __init__(self, step_reward: float = 0.0, max_presses: int = 3) -> None:
        if not 1 <= int(max_presses) <= 9:
            raise UserError("lights option max_presses must be 1-9")
        self.step_reward = float(step_reward)
        self.max_presses = int(max_presses)
        self.row: tuple[int, ...] = ()
        self.done = False

    def check_task(self, task: str) -> None:
        parse_task(task)

    def start(self, task: str) -> tuple[int, ...]:
        """The task's first row: a function of the task id (and the options) only."""
        n, _ = parse_task(task)
        rng = random.Random(f"{task}/{self.max_presses}")  # its own RNG state, never the global one
        row = (0,) * n
        while not any(row):
            for _ in range(rng.randint(1, self.max_presses)):
                row = press(row, rng.randrange(n))
        return row

    def _obs(self, text: str) -> Observation:
        plan = solve(self.row) or []
        lights = " ".join("ON" if v else "off" for v in self.row)
        return Observation(
            text=f"{text}\nLights: {lights}".strip(),
            admissible=[f"press {i + 1}" for i in range(len(self.row))],
            goal=GOAL,
            anchor=lights,
            info={"expert_plan": [f"press {i + 1}" for i in plan]},
        )

    def reset(self, task: str, seed: int | None = None) -> Observation:
        # `seed` is unused: the task id alone determines the game
        self.row, self.done = self.start(task), False
        obs = self._obs("A row of lights.")
        obs.info["walkthrough"] = list(obs.info["expert_plan"])
        return obs

    def step(self, action: str) -> Transition:
        if not self.row:
            raise RuntimeError("step() before reset()")
        if self.done:
            return Transition(self._obs("The puzzle is solved."), 0.0, True, won=True, valid=False)
        m = re.fullmatch(r"press (\d+)", action.strip().lower())
        if not m or not 1 <= int(m[1]) <= len(self.row):
            return Transition(self._obs("Nothing happens."), self.step_reward, False, valid=False)
        self.row = press(self.row, int(m[1]) - 1)
        self.done = not any(self.row)
        reward = (1.0 if self.done else 0.0) + self.step_reward
        text = "The last light goes out." if self.done else f"You press {m[1]}."
        return Transition(self._obs(text), reward, self.done, won=self.done)

    def build_tasks(self, task_ids, workers=1, progress=None):
        """`agentrl envs build`: nothing to generate; verify that every game is solvable."""
        for task in task_ids:
            if solve(self.start(task)) is None:
                raise UserError(f"lights: {task} has no solution")
            if progress:
                progress(1)
        return list(task_ids)
