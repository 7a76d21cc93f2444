"""Drive envs x policy into episodes (ARCHITECTURE.md §7).

All live episodes advance together: at each turn the policy is asked once for the
whole batch, and the env pool steps them in parallel. A finished episode is handed
to `on_episode` (the store writes it in one transaction) straight away, so a crash
loses at most the episodes in flight.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agentrl.envs.base import Observation
from agentrl.envs.pool import EnvFailure, EnvPool
from agentrl.envs.registry import env_name_of
from agentrl.errors import warn_once
from agentrl.policy.base import Action, Policy, TurnContext
from agentrl.store.records import EpisodeRecord, StepRecord

_stop = {"requested": False}


def request_stop() -> None:
    """Ask running rollouts to stop at the next turn boundary (they raise KeyboardInterrupt there)."""
    _stop["requested"] = True


def clear_stop() -> None:
    _stop["requested"] = False


def stop_requested() -> bool:
    return _stop["requested"]


@dataclass
class EpisodeSpec:
    task_id: str
    group_id: str
    seed: int | None = None
    split: str = "train"
    iteration: int = 0
    forced: list[str] = field(default_factory=list)  # leading actions to replay before the policy acts
    sample: int = 0  # index of this episode within its group (0..G-1)

    @property
    def sample_key(self) -> int:
        """A stable 63-bit id of (group, sample): the episode's identity for sampling."""
        digest = hashlib.blake2b(f"{self.group_id}#{self.sample}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1


@dataclass
class _Live:
    spec: EpisodeSpec
    rec: EpisodeRecord
    obs: Observation
    history: list[tuple[str, str]] = field(default_factory=list)
    start: float = 0.0


@dataclass
class RolloutStats:
    episodes: int = 0
    steps: int = 0
    errors: int = 0
    policy_s: float = 0.0
    env_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0
    generated_tokens: int = 0
    dropped_turns: int = 0


def group_specs(
    tasks: list[str], group_size: int, split: str, iteration: int, seed: int, tag: str = ""
) -> list[EpisodeSpec]:
    """G episodes per task, sharing a group id and an env seed (same initial state)."""
    specs = []
    for k, task in enumerate(tasks):
        gid = f"{tag}it{iteration}/{k}/{task}"
        env_seed = seed * 1_000_003 + iteration * 10_007 + k
        specs += [EpisodeSpec(task, gid, env_seed % (2**31), split, iteration, sample=j) for j in range(group_size)]
    return specs


def _placement(pool, policy, slot: int) -> dict[str, str]:
    """{"env": node, "engine": node} of a remote env pool / engine, where they say (Ray runtime)."""
    out = {}
    for where, owner in (("env", pool), ("engine", getattr(policy, "engine", None))):
        placement = getattr(owner, "placement", None)
        node = placement(slot) if callable(placement) else None
        if node:
            out[where] = node
    return out


def run_episodes(
    specs: list[EpisodeSpec],
    policy: Policy,
    pool: EnvPool,
    max_steps: int,
    on_episode: Callable[[EpisodeRecord], None],
    concurrency: int = 32,
    invalid_penalty: float = 0.0,
    policy_name: str = "",
    on_progress: Callable[[int], None] | None = None,
) -> RolloutStats:
    stats = RolloutStats()
    t_start = time.perf_counter()
    queue = deque(enumerate(specs))
    live: dict[int, _Live] = {}
    free_slots = deque(range(concurrency))
    env_options = dict(getattr(pool, "env_options", None) or {})  # stored with each episode, for replay

    def finish(slot: int, ep: _Live, status: str, error: str | None = None, final: str = "") -> None:
        rec = ep.rec
        rec.status, rec.error, rec.final_observation = status, error, final
        rec.ret = sum(s.reward for s in rec.steps)
        rec.wall_s = time.perf_counter() - ep.start
        nodes = _placement(pool, policy, slot)
        if nodes:
            rec.info["nodes"] = nodes  # which cluster nodes served it (runtime.backend: ray)
        t0 = time.perf_counter()
        on_episode(rec)
        stats.write_s += time.perf_counter() - t0
        stats.episodes += 1
        stats.errors += status == "error"
        policy.end_episode(slot)
        pool.release(slot)
        del live[slot]
        free_slots.append(slot)
        if on_progress:
            on_progress(1)

    while queue or live:
        if _stop["requested"]:  # a safe point: no write or env request is half done
            raise KeyboardInterrupt
        # fill free slots with new episodes
        starting = []
        while queue and free_slots:
            _, spec = queue.popleft()
            starting.append((free_slots.popleft(), spec))
        if starting:
            t0 = time.perf_counter()
            obs_list = pool.reset([(slot, spec.task_id, spec.seed) for slot, spec in starting])
            stats.env_s += time.perf_counter() - t0
            for (slot, spec), obs in zip(starting, obs_list):
                rec = EpisodeRecord(
                    task_id=spec.task_id,
                    group_id=spec.group_id,
                    env=env_name_of(spec.task_id),
                    split=spec.split,
                    iteration=spec.iteration,
                    seed=spec.seed,
                    policy=policy_name,
                )
                rec.info["sample"] = spec.sample
                if env_options:
                    rec.info["env_options"] = env_options
                version = getattr(policy, "weights_version", None)  # which weights played it (LLM policies)
                if version is not None:
                    rec.info["weights_version"] = version
                    if spec.split == "train":  # updates the learner is ahead of these weights (max_staleness)
                        rec.info["staleness"] = max(0, spec.iteration - 1 - version)
                    rec.info["engine"] = getattr(getattr(policy, "engine", None), "name", None)
                ep = _Live(spec, rec, Observation(text=""), start=time.perf_counter())
                live[slot] = ep
                if isinstance(obs, EnvFailure):
                    finish(slot, ep, "error", obs.error)
                    continue
                ep.obs = obs
                rec.goal = obs.goal
                if "walkthrough" in obs.info:
                    rec.info["walkthrough"] = obs.info["walkthrough"]
        if not live:
            continue

        slots = sorted(live)
        forced = {
            s: live[s].spec.forced[len(live[s].rec.steps)]
            for s in slots
            if len(live[s].rec.steps) < len(live[s].spec.forced)
        }
        asked = [s for s in slots if s not in forced]
        contexts = [
            TurnContext(
                key=s,
                task_id=live[s].spec.task_id,
                t=len(live[s].rec.steps),
                observation=live[s].obs,
                history=list(live[s].history),
                sample_key=live[s].spec.sample_key,
                group_id=live[s].spec.group_id,
            )
            for s in asked
        ]
        t0 = time.perf_counter()
        answers = dict(zip(asked, policy.act(contexts))) if contexts else {}
        stats.policy_s += time.perf_counter() - t0
        actions: list[Action] = [
            answers[s] if s in answers else Action(text=forced[s], raw=forced[s], info={"forced": True}) for s in slots
        ]

        for slot, act in list(zip(slots, actions)):
            if act.error is not None:  # the policy cannot act in this episode: it ends, the run goes on
                ep = live[slot]
                finish(slot, ep, "error", f"task {ep.spec.task_id}, step {len(ep.rec.steps)}: {act.error}")
        stepping = [(s, a) for s, a in zip(slots, actions) if a.error is None]
        slots, actions = [s for s, _ in stepping], [a for _, a in stepping]
        t0 = time.perf_counter()
        results = pool.step([(s, a.text if a.parsed else "") for s, a in stepping]) if stepping else []
        stats.env_s += time.perf_counter() - t0

        for slot, act, res in zip(slots, actions, results):
            ep = live[slot]
            for note in getattr(res, "warnings", ()) or ():
                warn_once(f"{ep.rec.env}: {note}")
            if act.action_ids:
                stats.generated_tokens += len(act.action_ids)
            stats.dropped_turns += int(act.info.get("dropped_turns", 0))
            if isinstance(res, EnvFailure):
                finish(slot, ep, "error", res.error)
                continue
            valid = res.valid and act.parsed
            reward = res.reward + (invalid_penalty if not valid else 0.0)
            info = {k: v for k, v in act.info.items()}
            if reward != res.reward:
                info["env_reward"] = res.reward
            t = len(ep.rec.steps)
            ep.rec.steps.append(
                StepRecord(
                    t=t,
                    observation=ep.obs.text,
                    action=act.text,
                    reward=reward,
                    terminated=res.terminated,
                    truncated=res.truncated,
                    valid=valid,
                    anchor=ep.obs.anchor,
                    admissible=ep.obs.admissible,
                    raw=act.raw,
                    prompt_ids=act.prompt_ids,
                    action_ids=act.action_ids,
                    logprobs=act.logprobs,
                    info=info,
                )
            )
            stats.steps += 1
            ep.history.append((ep.obs.text, act.text))
            ep.obs = res.observation
            if res.won:
                ep.rec.won = True
            if res.terminated:
                finish(slot, ep, "ok", final=res.observation.text)
            elif res.truncated or t + 1 >= max_steps:
                ep.rec.steps[-1].truncated = True
                finish(slot, ep, "truncated", final=res.observation.text)
    stats.wall_s = time.perf_counter() - t_start
    return stats
