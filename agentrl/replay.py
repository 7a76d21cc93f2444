"""`agentrl replay`: rebuild a stored episode's env from its task id, seed and adapter options
(`episodes.info.env_options`), re-execute the stored actions, and check step by step that
observations and rewards match what was stored."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from agentrl.checks import check_model_device
from agentrl.command import parse_checkpoint_ref, resolve_checkpoint, rollout_with_progress
from agentrl.config import recipe_to_yaml
from agentrl.envs.pool import EnvFailure, EnvPool
from agentrl.errors import UserError
from agentrl.policy.factory import make_policy
from agentrl.rollout import EpisodeSpec
from agentrl.store.db import Store
from agentrl.store.queries import get_episode
from agentrl.store.records import EpisodeRecord


@dataclass
class ReplayStep:
    t: int  # -1 = the reset observation
    action: str
    obs_match: bool
    reward_match: bool
    stored_obs: str
    replay_obs: str
    stored_reward: float
    replay_reward: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.obs_match and self.reward_match and self.error is None


@dataclass
class ReplayReport:
    episode_id: int
    task_id: str
    steps: list[ReplayStep] = field(default_factory=list)

    @property
    def first_divergence(self) -> ReplayStep | None:
        return next((s for s in self.steps if not s.ok), None)

    @property
    def ok(self) -> bool:
        return self.first_divergence is None


def _env_reward(step) -> float:
    return float(step.info.get("env_reward", step.reward))


def replay_record(ep: EpisodeRecord, step_timeout: float = 30.0, workers: int = 1) -> ReplayReport:
    """Replay a stored episode in a fresh env (one worker process: a hang or crash is a divergence;
    `workers=0`: in this process)."""
    report = ReplayReport(ep.id or 0, ep.task_id)
    # the adapter options the episode was played with (stored with it when there were any)
    options = ep.info.get("env_options") or {}
    with EnvPool(workers=workers, step_timeout=step_timeout, env_options=options) as pool:
        obs = pool.reset([(0, ep.task_id, ep.seed)])[0]
        if isinstance(obs, EnvFailure):
            report.steps.append(
                ReplayStep(
                    -1, "", False, True, ep.steps[0].observation if ep.steps else "", "", 0.0, 0.0, error=obs.error
                )
            )
            return report
        first = ep.steps[0].observation if ep.steps else ep.final_observation
        report.steps.append(ReplayStep(-1, "(reset)", obs.text == first, True, first, obs.text, 0.0, 0.0))
        for i, st in enumerate(ep.steps):
            res = pool.step([(0, st.action)])[0]
            expected = ep.steps[i + 1].observation if i + 1 < len(ep.steps) else ep.final_observation
            if isinstance(res, EnvFailure):
                report.steps.append(
                    ReplayStep(st.t, st.action, False, False, expected, "", _env_reward(st), 0.0, error=res.error)
                )
                break
            report.steps.append(
                ReplayStep(
                    st.t,
                    st.action,
                    res.observation.text == expected,
                    abs(res.reward - _env_reward(st)) < 1e-9,
                    expected,
                    res.observation.text,
                    _env_reward(st),
                    res.reward,
                )
            )
    return report


def replay_episode(store: Store, episode_id: int | str, step_timeout: float = 30.0) -> ReplayReport:
    return replay_record(get_episode(store, episode_id), step_timeout)


# -- a checkpoint continues stored episodes -------------------------------------------------------
@dataclass
class Continuation:
    episode_id: int  # the stored episode
    new_episode_id: int  # the continuation, stored in the replay run
    task_id: str
    from_step: int
    was_won: bool
    won: bool
    length: int


def continue_episodes(
    store: Store, episode_ids: list[int], policy_ref: str, from_step: int = 0, console=None, show_progress: bool = True
) -> tuple[int, list[Continuation]]:
    """Replay each stored episode's first `from_step` actions, then let checkpoint `policy_ref`
    (`RUN` or `RUN:N`) continue it greedily. Continuations are stored as a new eval run; returns
    (that run's id, one Continuation per episode)."""
    recipe, adapter, run_id = resolve_checkpoint(store, *parse_checkpoint_ref(policy_ref, "--policy"))
    recipe = recipe.model_copy(update={"policy": "llm"})
    eps = [get_episode(store, e) for e in episode_ids]
    specs = []
    for ep in eps:
        if from_step > len(ep.steps):
            raise UserError(f"episode {ep.id} has {len(ep.steps)} steps; --from-step {from_step} is past its end")
        specs.append(
            EpisodeSpec(
                ep.task_id, f"replay/{ep.id}", ep.seed, "eval", 0, forced=[s.action for s in ep.steps[:from_step]]
            )
        )
    check_model_device(recipe)  # before the model is loaded
    policy, name = make_policy(recipe, greedy=True, adapter_path=adapter)
    new_run = store.create_run(f"replay-{run_id}", recipe_to_yaml(recipe), kind="eval", parent_run_id=run_id)
    recs, _ = rollout_with_progress(
        recipe,
        policy,
        name,
        specs,
        store,
        new_run,
        f"continue {len(specs)} episodes",
        console or Console(stderr=True),
        show_progress,
    )
    store.set_run_status(new_run, "finished")
    by_group = {r.group_id: r for r in recs}
    out = [
        Continuation(
            ep.id,
            by_group[f"replay/{ep.id}"].id,
            ep.task_id,
            from_step,
            ep.won,
            by_group[f"replay/{ep.id}"].won,
            len(by_group[f"replay/{ep.id}"].steps),
        )
        for ep in eps
    ]
    return new_run, out
