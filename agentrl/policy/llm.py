"""The LLM policy (ARCHITECTURE.md §7): prompts in, actions out, on any engine.

At each turn it builds every live episode's prompt (chat template, system prompt with the goal,
the history window, the observation, the admissible list: `agentrl.policy.prompt`), hands the
token-id prompts to its engine (`agentrl.engines`: `hf` or `vllm`) in one call, and turns each
generation into an `Action`: in admissible mode the command the constrained ids spell, in free
mode the command parsed from the text. It remembers each episode's earlier turns as it played
them (the exact generated ids, so a prompt with `history = -1` extends the previous one token
for token and the engine can reuse its cache).

Sampling streams: an episode with a `sample_key` samples turn t from a stream seeded by
(policy seed, sample_key, t) only (`turn_seed`), so its draws do not depend on the other episodes
of the batch and a resumed rollout redraws exactly what was lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentrl.config import RolloutConfig
from agentrl.engines.base import Engine, Request, Sampling
from agentrl.envs.registry import env_name_of
from agentrl.policy.base import Action, TurnContext
from agentrl.policy.constrained import parse_action
from agentrl.policy.prompt import (
    PromptTooLong,
    Turn,
    build_prompt,
    chat_format,
    system_message,
    system_prompt_for,
    user_message,
)


@dataclass
class _Episode:
    observations: list[str] = field(default_factory=list)  # observation text of each turn played
    turns: list[Turn] = field(default_factory=list)  # each turn as shown in later prompts


def turn_seed(seed: int, sample_key: int, t: int) -> int:
    """The seed of one episode's sampling stream at turn t: a function of (policy seed, episode, turn)
    only, never of the other episodes in the batch."""
    return (seed * 0x9E3779B97F4A7C15 + sample_key * 0xBF58476D1CE4E5B9 + t * 0x94D049BB133111EB) % (2**63)


class LLMPolicy:
    """`act` / `end_episode` as in `agentrl.policy.base.Policy`, generating on `engine`."""

    name = "llm"

    def __init__(
        self,
        engine: Engine,
        tokenizer,
        rollout_cfg: RolloutConfig,
        greedy: bool = False,
        seed: int = 0,
        env_options: dict | None = None,
    ):
        self.engine, self.tok, self.cfg = engine, tokenizer, rollout_cfg
        self.greedy, self.seed = greedy, seed
        self.fmt = chat_format(tokenizer)
        self.env_options = dict(env_options or {})
        self._system_prompts: dict[str, str] = {}  # adapter name -> system prompt (its system_intro)
        self.sampling = Sampling(
            temperature=rollout_cfg.temperature,
            top_p=rollout_cfg.top_p,
            max_new_tokens=rollout_cfg.max_new_tokens,
            greedy=greedy,
            stop_ids=tuple(self.fmt.stop_ids),
        )
        self.episodes: dict[int, _Episode] = {}

    @property
    def stats(self):
        return self.engine.stats

    @property
    def weights_version(self) -> int:
        """The version of the weights the engine generates with (stored with every episode)."""
        return self.engine.weights_version

    def end_episode(self, key: int) -> None:
        self.episodes.pop(key, None)
        self.engine.end(key)

    def reset(self) -> None:
        """Forget every episode (e.g. after the model's weights changed mid-episode)."""
        self.episodes.clear()
        self.engine.reset()

    def system_prompt(self, task_id: str) -> str:
        """The system prompt of a task's episodes (before the goal): the recipe's, else the built-in one
        opened by its adapter's `system_intro`."""
        env = env_name_of(task_id)
        if env not in self._system_prompts:
            self._system_prompts[env] = system_prompt_for(self.cfg, env, self.env_options)
        return self._system_prompts[env]

    def act(self, contexts: list[TurnContext]) -> list[Action]:
        prompts, requests, asked = [], [], []
        failed: dict[int, Action] = {}  # index in contexts -> the episode's end (its prompt cannot fit)
        for i, ctx in enumerate(contexts):
            new = ctx.key not in self.episodes or ctx.t == 0  # a new episode reuses nothing (weights may differ)
            if new:
                self.episodes[ctx.key] = _Episode()
            obs = ctx.observation
            try:
                prompt = build_prompt(
                    self.fmt,
                    system_message(self.system_prompt(ctx.task_id), obs.goal),
                    self._history(ctx, self.episodes[ctx.key]),
                    obs.text,
                    obs.admissible,
                    self.cfg.history,
                    self.cfg.max_prompt_tokens,
                    self.cfg.show_admissible,
                )
            except PromptTooLong as e:  # this episode cannot go on; the others do
                failed[i] = Action(text="", raw="", parsed=False, error=str(e))
                continue
            constrained = self.cfg.action_mode == "admissible" and bool(obs.admissible)
            seed = None if ctx.sample_key is None else turn_seed(self.seed, ctx.sample_key, ctx.t)
            prompts.append(prompt)
            asked.append(i)
            requests.append(
                Request(
                    ctx.key, list(prompt.ids), list(obs.admissible) if constrained else None, seed, new, ctx.group_id
                )
            )
        gens = self.engine.generate(requests, self.sampling) if requests else []
        done = {i: self._action(contexts[i], p, r, g) for i, p, r, g in zip(asked, prompts, requests, gens)}
        return [done[i] if i in done else failed[i] for i in range(len(contexts))]

    def _history(self, ctx: TurnContext, ep: _Episode) -> list[Turn]:
        """Earlier turns: from this policy's memory when it played them, else from the context."""
        n = len(ctx.history)
        if (
            len(ep.turns) == ctx.t
            and n <= ctx.t
            and all(o == h[0] for o, h in zip(ep.observations[ctx.t - n :], ctx.history))
        ):
            return ep.turns
        turns = [Turn(user_message(o, None), self.fmt.encode(a)) for o, a in ctx.history]
        ep.observations, ep.turns = [o for o, _ in ctx.history], turns
        return turns

    def _action(self, ctx: TurnContext, prompt, req: Request, gen) -> Action:
        ep = self.episodes[ctx.key]
        ep.observations.append(ctx.observation.text)
        ep.turns.append(Turn(prompt.user, list(gen.ids)))
        raw = self.tok.decode(gen.ids, skip_special_tokens=True)
        if req.commands is not None:
            text, parsed = gen.command, True
        else:
            text, parsed = parse_action(raw, self.cfg.action_parser)
        info = {"dropped_turns": prompt.dropped_turns}
        if prompt.truncated:
            info["truncated_observation"] = True
        if self.cfg.action_mode == "admissible" and req.commands is None:
            info["constrained"] = False
        return Action(
            text=text,
            raw=raw,
            prompt_ids=list(prompt.ids),
            action_ids=list(gen.ids),
            logprobs=list(gen.logprobs),
            parsed=parsed,
            info=info,
        )
