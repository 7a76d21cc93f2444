"""`agentrl replay`: rebuild a stored episode's env from its task id and seed, re-execute the
stored actions, and check step by step that observations and rewards match what was stored."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentrl.envs.pool import EnvFailure, EnvPool
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


def replay_record(ep: EpisodeRecord, step_timeout: float = 30.0) -> ReplayReport:
    report = ReplayReport(ep.id or 0, ep.task_id)
    with EnvPool(workers=1, step_timeout=step_timeout) as pool:
        obs = pool.reset([(0, ep.task_id, ep.seed)])[0]
        if isinstance(obs, EnvFailure):
            report.steps.append(ReplayStep(-1, "", False, True, ep.steps[0].observation if ep.steps else "",
                                           "", 0.0, 0.0, error=obs.error))
            return report
        first = ep.steps[0].observation if ep.steps else ep.final_observation
        report.steps.append(ReplayStep(-1, "(reset)", obs.text == first, True, first, obs.text, 0.0, 0.0))
        for i, st in enumerate(ep.steps):
            res = pool.step([(0, st.action)])[0]
            expected = ep.steps[i + 1].observation if i + 1 < len(ep.steps) else ep.final_observation
            if isinstance(res, EnvFailure):
                report.steps.append(ReplayStep(st.t, st.action, False, False, expected, "",
                                               _env_reward(st), 0.0, error=res.error))
                break
            report.steps.append(ReplayStep(
                st.t, st.action, res.observation.text == expected, abs(res.reward - _env_reward(st)) < 1e-9,
                expected, res.observation.text, _env_reward(st), res.reward))
    return report


def replay_episode(store: Store, episode_id: int | str, step_timeout: float = 30.0) -> ReplayReport:
    return replay_record(get_episode(store, episode_id), step_timeout)
