"""The ALFWorld adapter (ARCHITECTURE.md §3): task id -> generated game -> turn-level env.

`AlfWorldEnv().reset("alfworld/pick_clean_then_place_in_recep/FloorPlan12/seed-3")`
builds the game on first use (cached under `<cache>/games/<task id>.tw-pddl`), plays it
through textworld with ALFWorld's demangler, and returns an `Observation`:

- `text`: the room description (the intro without its banner and task line), then each
  step's feedback; `goal`: the sentence after "Your task is to: ";
- `admissible`: the game's valid commands, sorted; `anchor`: the raw feedback text;
- `info["walkthrough"]` (at reset): the planner's plan stored at build time;
  `info["expert_plan"]`: the plan steps still to do. It stays exact while the agent
  follows it; looks, examines, inventory and invalid commands leave it intact; a "go to"
  off the plan puts "go to <where the plan was>" back in front; any other deviation
  (opening, taking, moving something else) makes it stale: it is then `[]` and
  `info["expert_plan_stale"]` is True.

Reward: `win_reward` (default `WIN_REWARD` = 1.0) on the winning step, `invalid_reward`
(default 0.0) on a step the game answers "Nothing happens.", else 0. An action refused
by `clean_action`, or not among the admissible commands, never reaches the game: the
step is invalid and the game's own answer to it, "Nothing happens.", is returned.
Commands are matched case-insensitively; "put X in/on Y" is read as the wheel's
"move X to Y".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agentrl.envs.alfworld.generate import check_task_id, ensure_game, game_path, parse_task_id
from agentrl.envs.base import Observation, TextAdventureEnv, Transition, clean_action
from agentrl.errors import UserError

WIN_REWARD = 1.0
INVALID_FEEDBACK = "Nothing happens."
_BANNER = re.compile(r"^\s*-= Welcome to TextWorld, ALFRED! =-\s*")
_TASK = re.compile(r"\s*Your task is to: (.*?)\s*$", re.S)
_PUT = re.compile(r"^put (.+?) (?:in/on|in|on|into|onto) (.+)$")
_OBSERVE = ("look", "inventory", "help", "examine ")  # commands that change nothing


def split_intro(raw: str) -> tuple[str, str]:
    """(room description, goal sentence) from the game's intro text."""
    text = _BANNER.sub("", raw)
    m = _TASK.search(text)
    if not m:
        return text.strip(), ""
    return text[: m.start()].strip(), m.group(1).strip()


def normalize_command(action: str, admissible: list[str]) -> str:
    """The admissible command an action means, else the action lower-cased."""
    cmd = " ".join(action.lower().split()).rstrip(".!").strip()
    if cmd in admissible:
        return cmd
    m = _PUT.match(cmd)
    if m and f"move {m.group(1)} to {m.group(2)}" in admissible:
        return f"move {m.group(1)} to {m.group(2)}"
    return cmd


class AlfWorldEnv(TextAdventureEnv):
    """Generated ALFWorld games as a turn-level env (see the module docstring)."""

    name = "alfworld"

    def __init__(self, win_reward: float | None = None, invalid_reward: float = 0.0, build_missing: bool = True):
        self.win_reward = WIN_REWARD if win_reward is None else float(win_reward)
        self.invalid_reward = float(invalid_reward)
        self.build_missing = build_missing
        self._env = None  # one textworld env, reloaded for each new game
        self._loaded: tuple[str, float] | None = None
        self._task = ""
        self._admissible: list[str] = []
        self._goal = ""
        self._plan: list[str] = []
        self._stale = False
        self._at: str | None = None  # the receptacle the agent last went to
        self._done = False
        self._won = False

    # ------------------------------------------------------------------ protocol

    def check_task(self, task: str) -> None:
        check_task_id(task)

    def build_tasks(self, task_ids: list[str], workers: int = 1, progress=None):
        """`agentrl envs build`: generate, verify (the planner's plan wins) and cache the games."""
        from agentrl.envs.alfworld.generate import build_tasks

        return build_tasks(task_ids, workers=workers, progress=progress)

    def reset(self, task: str, seed: int | None = None) -> Observation:
        """Start `task` from its initial state (games are deterministic: `seed` is unused)."""
        spec = parse_task_id(task)
        path = ensure_game(task) if self.build_missing else game_path(task)
        if not path.exists():
            raise UserError(f"game for {task} is not built; run: agentrl envs build alfworld")
        self._load(path)
        state = self._env.reset()
        raw = state["feedback"]
        text, self._goal = split_intro(raw)
        walkthrough = list(state.get("extra.walkthrough") or [])
        self._task, self._plan, self._stale, self._at = task, list(walkthrough), False, None
        self._done = self._won = False
        self._admissible = sorted(state["admissible_commands"])
        info = {
            "walkthrough": walkthrough,
            "task_type": spec.task_type,
            "floorplan": spec.floorplan,
            "game_file": str(path),
        }
        return self._observation(text, raw, info)

    def step(self, action: str) -> Transition:
        if not self._task:
            raise UserError("step() before reset()")
        if self._done:
            obs = Observation("The game is over.", [], self._goal, "The game is over.", self._plan_info())
            return Transition(obs, 0.0, True, won=self._won, valid=False)
        text, ok = clean_action(action)
        cmd = normalize_command(text, self._admissible) if ok else text
        if not ok or cmd not in self._admissible:
            # What the game answers to a command it does not know; the state is unchanged.
            return self._transition(INVALID_FEEDBACK, INVALID_FEEDBACK, valid=False, won=False)
        state, _, _ = self._env.step(cmd)
        raw = state["feedback"]
        valid = raw.strip() != INVALID_FEEDBACK
        won = bool(state["won"])
        self._admissible = sorted(state["admissible_commands"])
        if valid:
            self._track_plan(cmd)
        self._done = self._won = won
        return self._transition(raw.strip(), raw, valid=valid, won=won)

    def close(self) -> None:
        if self._env is not None:
            try:
                self._env.close()
            except Exception:  # pragma: no cover - best effort
                pass
        self._env = None
        self._loaded = None

    # ------------------------------------------------------------------ helpers

    def _load(self, path: Path) -> None:
        key = (str(path), path.stat().st_mtime)
        if self._env is None:
            from agentrl.envs.alfworld.play import start_game

            self._env = start_game(path, plannable=False)
        elif self._loaded != key:
            self._env.load(str(path))
        self._loaded = key

    def _track_plan(self, cmd: str) -> None:
        """Keep `expert_plan` the steps still to do after a valid command (module docstring)."""
        prev_at = self._at
        if cmd.startswith("go to "):
            self._at = cmd[len("go to ") :]
        if self._plan and cmd == self._plan[0]:
            self._plan.pop(0)
        elif cmd.startswith(_OBSERVE):
            pass
        elif cmd.startswith("go to "):
            if self._plan and not self._plan[0].startswith("go to ") and prev_at and prev_at != self._at:
                self._plan.insert(0, f"go to {prev_at}")
        elif self._plan:
            self._plan, self._stale = [], True

    def _plan_info(self) -> dict[str, Any]:
        return {"expert_plan": list(self._plan), "expert_plan_stale": self._stale}

    def _observation(self, text: str, raw: str, extra: dict[str, Any] | None = None) -> Observation:
        info = {**self._plan_info(), **(extra or {})}
        return Observation(text=text, admissible=list(self._admissible), goal=self._goal, anchor=raw, info=info)

    def _transition(self, text: str, raw: str, valid: bool, won: bool) -> Transition:
        reward = self.win_reward if won else (0.0 if valid else self.invalid_reward)
        return Transition(self._observation(text, raw), reward, terminated=won, truncated=False, won=won, valid=valid)
