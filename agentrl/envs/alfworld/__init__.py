"""ALFWorld, generated offline (see docs/alfworld.md).

`build_alfworld(...)` generates and caches games of the six ALFWorld task types;
`AlfWorldEnv` plays them as a turn-level env (registry name "alfworld"; gymnasium id
"agentrl/ALFWorld-v0" through `agentrl.envs.gymnasium_api`). Task ids:
`alfworld/<task type>/<FloorPlanN>/seed-K` (full-size room) or `.../small-seed-K`.
"""

from agentrl.envs.alfworld.adapter import INVALID_FEEDBACK, WIN_REWARD, AlfWorldEnv
from agentrl.envs.alfworld.generate import (
    TASK_TYPES,
    build_alfworld,
    build_tasks,
    default_n,
    ensure_game,
    game_path,
    make_task_id,
    parse_task_id,
    plan_tasks,
    split_floorplans,
)

__all__ = [
    "AlfWorldEnv",
    "INVALID_FEEDBACK",
    "TASK_TYPES",
    "WIN_REWARD",
    "build_alfworld",
    "build_tasks",
    "default_n",
    "ensure_game",
    "game_path",
    "make_task_id",
    "parse_task_id",
    "plan_tasks",
    "split_floorplans",
]
