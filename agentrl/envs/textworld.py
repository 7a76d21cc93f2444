"""TextWorld adapter: named, reproducible games behind the turn-level protocol.

Task-id grammar (the id alone determines the game; same id -> byte-identical `.z8`):

    textworld/w{world_size}-o{nb_objects}-q{quest_length}/seed-{N}
        custom game, the equivalent of `tw-make custom --world-size W --nb-objects O
        --quest-length Q --seed N`
    textworld/tw-simple-{rewards}-{goal}/seed-{N}
        rewards: dense | balanced | sparse; goal: detailed | brief | none
    textworld/tw-cooking-r{recipe}-t{take}[-go{G}][-open][-cook][-cut][-drop]/seed-{N}
        recipe 1-5 ingredients, take 0..recipe, G in 1|6|9|12 rooms (default 1);
        the flags, when present, must appear in this order
    textworld/tw-coin_collector-l{level}/seed-{N}       level 1-300
    textworld/tw-treasure_hunter-l{level}/seed-{N}      level 1-30

Games are generated once with TextWorld's Python API and cached under
`$AGENTRL_CACHE/games` (default `~/.cache/agentrl/games`) as `<spec>/seed-<N>.z8`
plus its `.json`. Files are written to a private temp folder and renamed into place
(json first, z8 last), so a present `.z8` always means a complete game and parallel
builders never see half-written files.

Observation fields:
- text: the interpreter's output without the trailing `>` prompt / padded status line
  (`-= Bedroom =-0/1`), without the end-of-game "Would you like to RESTART ..." line,
  and at reset without the TextWorld ASCII-art banner (the intro text is kept).
- anchor: the state key for GiGPO = cleaned room description + inventory. We chose this
  over the step's feedback text because feedback depends on the action that led to the
  state ("You open the box." vs "-= Cellar =- ..."), while description+inventory is
  a function of the game state only, so revisits of a state give the same anchor.
- admissible: sorted admissible commands, meta commands dropped.
- info: expert_plan (remaining optimal commands), score, max_score; at reset also the
  walkthrough (the game's full solution).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import textworld
import textworld.challenges
import textworld.generator
from textworld import EnvInfos, GameOptions

from agentrl.envs.base import Observation, TextAdventureEnv, Transition, clean_action
from agentrl.errors import UserError

_FIRST_COMMAND = re.compile(r"[.;!?]|,?\s+then\s+|\bthen\b\s*", re.IGNORECASE)

# Only what the adapter uses: every extra info costs interpreter time per step (measured with bench/env_speed.py).
REQUEST_INFOS = EnvInfos(
    admissible_commands=True,
    description=True,
    inventory=True,
    won=True,
    lost=True,
    score=True,
    max_score=True,
    policy_commands=True,
    objective=True,
)
REFUSED_TEXT = "That command is not allowed."
GAME_OVER_TEXT = "The game is over."

# ---------------------------------------------------------------- task ids -> game specs

_SEED = r"/seed-(?P<seed>\d+)"
_CUSTOM = re.compile(r"textworld/(?P<spec>w(?P<w>\d+)-o(?P<o>\d+)-q(?P<q>\d+))" + _SEED)
_SIMPLE = re.compile(
    r"textworld/(?P<spec>tw-simple-(?P<rewards>dense|balanced|sparse)-(?P<goal>detailed|brief|none))" + _SEED
)
_COOKING = re.compile(
    r"textworld/(?P<spec>tw-cooking-r(?P<recipe>\d+)-t(?P<take>\d+)(?:-go(?P<go>\d+))?"
    r"(?P<open>-open)?(?P<cook>-cook)?(?P<cut>-cut)?(?P<drop>-drop)?)" + _SEED
)
_LEVELED = re.compile(
    r"textworld/(?P<spec>(?P<challenge>tw-coin_collector|tw-treasure_hunter)-l(?P<level>\d+))" + _SEED
)
_LEVEL_MAX = {"tw-coin_collector": 300, "tw-treasure_hunter": 30}

GRAMMAR_HELP = (
    "textworld/w{W}-o{O}-q{Q}/seed-{N}, textworld/tw-simple-{dense|balanced|sparse}-{detailed|brief|none}/seed-{N}, "
    "textworld/tw-cooking-r{R}-t{T}[-go{G}][-open][-cook][-cut][-drop]/seed-{N}, "
    "textworld/tw-coin_collector-l{L}/seed-{N}, textworld/tw-treasure_hunter-l{L}/seed-{N}"
)


@dataclass(frozen=True)
class GameSpec:
    """What to generate for one task id. challenge None = custom game."""

    task_id: str
    spec: str  # the folder name in the cache, e.g. "w2-o3-q4"
    seed: int
    challenge: str | None = None
    settings: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def parse_task(task_id: str) -> GameSpec:
    """Validate a TextWorld task id and turn it into a GameSpec (UserError if ill-formed)."""
    bad = f"bad TextWorld task id '{task_id}'"
    if m := _CUSTOM.fullmatch(task_id):
        w, o, q = int(m["w"]), int(m["o"]), int(m["q"])
        if not (1 <= w <= 100 and 0 <= o <= 200 and 1 <= q <= 50):
            raise UserError(f"{bad}: need 1<=w<=100, 0<=o<=200, 1<=q<=50")
        return GameSpec(task_id, m["spec"], int(m["seed"]), None, {"world_size": w, "nb_objects": o, "quest_length": q})
    if m := _SIMPLE.fullmatch(task_id):
        settings = {"rewards": m["rewards"], "goal": m["goal"], "test": False}
        return GameSpec(task_id, m["spec"], int(m["seed"]), "tw-simple", settings)
    if m := _COOKING.fullmatch(task_id):
        recipe, take, go = int(m["recipe"]), int(m["take"]), int(m["go"] or 1)
        if not 1 <= recipe <= 5 or not 0 <= take <= recipe or go not in (1, 6, 9, 12):
            raise UserError(f"{bad}: need recipe 1-5, take 0..recipe, go in 1|6|9|12")
        settings = {
            "recipe": recipe,
            "take": take,
            "go": go,
            "open": bool(m["open"]),
            "cook": bool(m["cook"]),
            "cut": bool(m["cut"]),
            "drop": bool(m["drop"]),
            "recipe_seed": 0,
            "split": None,
        }
        return GameSpec(task_id, m["spec"], int(m["seed"]), "tw-cooking", settings)
    if m := _LEVELED.fullmatch(task_id):
        level, top = int(m["level"]), _LEVEL_MAX[m["challenge"]]
        if not 1 <= level <= top:
            raise UserError(f"{bad}: {m['challenge']} level must be 1-{top}")
        return GameSpec(task_id, m["spec"], int(m["seed"]), m["challenge"], {"level": level})
    raise UserError(f"{bad} (expected one of: {GRAMMAR_HELP})")


def games_dir() -> Path:
    """The game cache: $AGENTRL_CACHE/games, else ~/.cache/agentrl/games."""
    root = os.environ.get("AGENTRL_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "agentrl") / "games"


def game_path(task_id: str) -> Path:
    """Where the task's compiled game lives (whether or not it was built yet)."""
    spec = parse_task(task_id)
    return games_dir() / spec.spec / f"seed-{spec.seed}.z8"


# ---------------------------------------------------------------- generation


def _options(spec: GameSpec, out: Path) -> GameOptions:
    options = GameOptions()
    options.seeds = spec.seed
    options.path = str(out)
    options.file_ext = ".z8"
    if spec.challenge is None:  # same settings as `tw-make custom` with --quest-length
        q = spec.settings["quest_length"]
        options.nb_rooms = spec.settings["world_size"]
        options.nb_objects = spec.settings["nb_objects"]
        options.nb_parallel_quests = 1
        options.chaining.min_length = options.chaining.max_length = options.chaining.max_depth = q
        options.chaining.min_depth = 1
        options.chaining.min_breadth, options.chaining.max_breadth = 1, 5
    return options


def _generate(spec: GameSpec) -> Path:
    """Generate and compile one game into the cache atomically; returns the .z8 path."""
    final = games_dir() / spec.spec / f"seed-{spec.seed}.z8"
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        options = _options(spec, tmp / final.name)
        try:
            if spec.challenge is None:
                game = textworld.generator.make_game(options)
            else:
                _, make_fn, _ = textworld.challenges.CHALLENGES[spec.challenge]
                game = make_fn(dict(spec.settings), options)
        except textworld.generator.QuestGenerationError:
            raise UserError(f"TextWorld cannot generate a quest for '{spec.task_id}'; try other sizes") from None
        z8 = Path(textworld.generator.compile_game(game, options))
        os.replace(z8.with_suffix(".json"), final.with_suffix(".json"))
        os.replace(z8, final)  # last: a present .z8 means a complete game
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_game(task_id: str) -> Path:
    """The task's game file, generated now if it is not cached yet."""
    return _generate(parse_task(task_id))


def _build_one(task_id: str) -> str:
    return str(ensure_game(task_id))


def build_games(task_ids: list[str], workers: int = 1, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Generate the missing games of `task_ids` (in `workers` spawned processes) and return
    all their paths, in the order given. `progress(k)` is called with the number of task
    ids that just became ready (already-cached ones are reported at once), so it can feed
    a progress bar's `advance`; the calls add up to len(task_ids)."""
    for t in task_ids:  # validate everything before spending time
        parse_task(t)
    from agentrl.envs.build import build_missing

    build_missing(task_ids, lambda t: game_path(t).exists(), _build_one, workers, progress)
    paths = [game_path(t) for t in task_ids]
    return paths


# ---------------------------------------------------------------- text cleaning

_ART_LINE = re.compile(r"[ _|\\$/<>]*")
_END_PROMPT = re.compile(r"\n?Would you like to RESTART, RESTORE a saved game, QUIT or UNDO the last command\?[^\n]*")
_BLANKS = re.compile(r"\n{3,}")


def strip_banner(text: str) -> str:
    """Drop TextWorld's leading ASCII-art banner (lines made of `_|\\$/<>` only), keep the rest."""
    lines = text.split("\n")
    i = 0
    while i < len(lines) and _ART_LINE.fullmatch(lines[i]):
        i += 1
    return "\n".join(lines[i:]) if "$$" in "\n".join(lines[:i]) else text


def clean_text(raw: str, banner: bool = False) -> str:
    """Interpreter output -> what the agent reads: no `>` prompt + status line, no
    end-of-game restart question, lines stripped, at most one blank line in a row."""
    text = raw.rstrip()
    cut = text.rfind("\n>")
    if cut >= 0 and "\n" not in text[cut + 2 :]:  # the last line is the prompt + padded status line
        text = text[:cut]
    elif text.startswith(">") and "\n" not in text:
        text = ""
    text = _END_PROMPT.sub("", text)
    if banner:
        text = strip_banner(text)
    text = "\n".join(line.strip() for line in text.split("\n"))  # e.g. the centred "*** The End ***"
    return _BLANKS.sub("\n\n", text).strip()


def _norm(command: str) -> str:
    return " ".join(command.lower().split())


# ---------------------------------------------------------------- the adapter


class TextWorldEnv(TextAdventureEnv):
    """Turn-level adapter over `textworld.start`. Reuses the loaded game across resets of
    the same file; generates (and caches) a game on first use of its task id."""

    name = "textworld"

    def __init__(self) -> None:
        self._env: Any = None
        self._path: Path | None = None
        self._walkthrough: list[str] = []
        self._obs: Observation | None = None
        self._admissible_norm: set[str] = set()
        self._score = 0.0
        self._done = False
        self._won = False

    def _load(self, path: Path) -> None:
        if path == self._path and self._env is not None:
            return
        self.close()
        with warnings.catch_warnings():  # jericho: "not fully supported" (TextWorld tracks score itself)
            warnings.simplefilter("ignore")
            self._env = textworld.start(str(path), request_infos=REQUEST_INFOS)
        self._path = path
        meta = json.loads(path.with_suffix(".json").read_text()).get("metadata", {})
        self._walkthrough = list(meta.get("walkthrough") or [])

    def _observation(self, state: Any, banner: bool = False) -> Observation:
        admissible = sorted(c for c in (state["admissible_commands"] or []) if clean_action(c)[1])
        self._admissible_norm = {_norm(c) for c in admissible}
        anchor = clean_text(state["description"] or "") + "\n\n" + clean_text(state["inventory"] or "")
        info = {
            "expert_plan": list(state["policy_commands"] or []),
            "score": state["score"],
            "max_score": state["max_score"],
        }
        return Observation(
            text=clean_text(state.feedback or "", banner=banner),
            admissible=admissible,
            goal=state["objective"] or "",
            anchor=anchor.strip(),
            info=info,
        )

    def check_task(self, task: str) -> None:
        parse_task(task)

    def build_tasks(self, task_ids: list[str], workers: int = 1, progress: Callable[[int], None] | None = None):
        """`agentrl envs build`: generate and cache the games (docs/env-contract.md, build hook)."""
        return build_games(task_ids, workers=workers, progress=progress)

    def reset(self, task: str, seed: int | None = None) -> Observation:
        self._load(ensure_game(task))
        state = self._env.reset()
        obs = self._observation(state, banner=True)
        obs.info["walkthrough"] = list(self._walkthrough or obs.info["expert_plan"])
        self._obs, self._score, self._done, self._won = obs, float(state["score"] or 0), False, False
        return obs

    def _same(self, text: str) -> Observation:
        assert self._obs is not None
        info = {k: v for k, v in self._obs.info.items() if k != "walkthrough"}
        return Observation(
            text=text,
            admissible=list(self._obs.admissible or []),
            goal=self._obs.goal,
            anchor=self._obs.anchor,
            info=info,
        )

    def step(self, action: str) -> Transition:
        if self._obs is None:
            raise RuntimeError("step() before reset()")
        if self._done:  # never drive the interpreter's post-game RESTART/QUIT prompt
            return Transition(self._same(GAME_OVER_TEXT), 0.0, True, won=self._won, valid=False)
        # Inform runs "a. b", "a, then b" and "a then b" as several commands: keep the first only
        text, ok = clean_action(_FIRST_COMMAND.split(action, maxsplit=1)[0])
        if not ok:
            return Transition(self._same(REFUSED_TEXT), 0.0, False, valid=False)
        valid = _norm(text) in self._admissible_norm if self._obs.admissible else True
        state, _, _ = self._env.step(text)
        obs = self._observation(state)
        score = float(state["score"] or 0)
        reward, self._score = score - self._score, score
        won, lost = bool(state["won"]), bool(state["lost"])
        self._done, self._won, self._obs = won or lost, won, obs
        return Transition(obs, reward, won or lost, won=won, valid=valid)

    def close(self) -> None:
        if self._env is not None:
            try:
                self._env.close()
            finally:
                self._env, self._path = None, None
