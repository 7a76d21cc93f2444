"""`agentrl export RUN --format sft`: chat-message records for supervised fine-tuning.

JSON lines, one record per policy turn, in the "messages" format that TRL's `SFTTrainer` and
OpenAI-style chat fine-tuning read:

    {"messages": [{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": USER_s}, {"role": "assistant", "content": ACTION_s},
                  ...
                  {"role": "user", "content": USER_t}, {"role": "assistant", "content": ACTION_t}],
     "run_id", "episode_id", "task_id", "t", "iteration", "split", "won", "valid", "truncated_observation"}

One record per turn, not per episode: each record is the prompt the policy saw when it chose
that turn's action, followed by that action, so a warm-start SFT trains every action on exactly
the context it had. A whole episode as one conversation would train turn t on every earlier turn,
which the policy never sees with a limited `rollout.history` or after turns were dropped for
`rollout.max_prompt_tokens`. (With `history: -1` and nothing dropped, a turn's record is a
prefix of the next one's.)

The messages are rendered as the LLM policy renders its prompts (`agentrl.policy.llm`,
`agentrl.policy.prompt`), from the run's stored recipe:

- system: `system_message(rollout.system_prompt or default_system_prompt(action_mode,
  action_parser, the adapter's system_intro), goal)`, with the episode's goal;
- users: `user_message(observation, admissible, rollout.show_admissible)`: the observation and
  that turn's list of valid commands as shown; earlier turns keep the list they were shown with
  (the policy remembers each turn's user message as shown);
- the window: the last `rollout.history` earlier turns (-1 = all), less the oldest
  `dropped_turns` the policy left out to fit `max_prompt_tokens` (stored in each step's info);
- assistant: the decoded generated ids (the stored `raw`): in admissible mode the command, in
  free mode the whole generation (`<action>go north</action>`), which is what the prompt holds.

Turns the policy did not play itself are rendered as the policy renders them. Forced turns (the
replayed prefix of `agentrl replay --policy ... --from-step N`) get no record, and the policy
shows them, and every turn before its first own one, as the observation without the valid
commands and the action text. Episodes of scripted policies (`random`, `expert`) have no
generated ids: their actions are written as the LLM policy would have to write them (admissible
mode: the command; free mode with the `tag` parser: `<action>command</action>`), so their
records are demonstrations in the policy's own format; nothing is dropped for length there.

Where the records differ from the stored prompt tokens: a step whose observation the policy cut
to fit `max_prompt_tokens` (step info `truncated_observation`; the cut depends on the tokenizer)
has the whole observation here and `"truncated_observation": true`. Otherwise the chat template
applied to a record's messages without the last one (`add_generation_prompt=True`) gives the
text of the stored prompt ids (`tests/test_export_formats.py`), except for generations that
ended with a special token other than the end-of-turn token, or held special tokens (the stored
text has them removed). For a template without a system role pass `system_role=False`: the
system text is put before the first user message, as the policy does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import yaml
from pydantic import ValidationError

from agentrl.config import RolloutConfig
from agentrl.errors import UserError
from agentrl.policy.prompt import system_message, system_prompt_for, user_message
from agentrl.store.records import EpisodeRecord, StepRecord


def turn_messages(
    system: str,
    shown: Sequence[tuple[str, str]],
    user: str,
    action: str | None = None,
    system_role: bool = True,
) -> list[dict[str, str]]:
    """The chat messages of one prompt as the LLM policy renders it.

    `system` is the whole system message (`system_message(prompt, goal)`), `shown` the earlier
    turns in the prompt as (user message as shown, assistant reply), `user` the current user
    message; `action`, when given, is appended as the final assistant message. With
    `system_role=False` (a chat template without a system role) the system text opens the first
    user message, separated by a blank line, as `agentrl.policy.prompt.ChatFormat` does."""
    msgs = [{"role": "system", "content": system}] if system_role else []
    for u, a in shown:
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": user})
    if not system_role:
        first = msgs[0]
        msgs[0] = {"role": "user", "content": f"{system}\n\n{first['content']}"}
    if action is not None:
        msgs.append({"role": "assistant", "content": action})
    return msgs


def assistant_text(step: StepRecord, rollout: RolloutConfig) -> str:
    """The assistant reply of a step as its prompt holds it: the decoded generated ids (`raw`);
    for a scripted policy's step (no generated ids), the action as the LLM policy would write it."""
    if step.action_ids is not None:
        return step.raw
    if rollout.action_mode == "admissible" and step.admissible:
        return step.action
    return f"<action>{step.action}</action>" if rollout.action_parser == "tag" else step.action


def episode_turns(
    rollout: RolloutConfig, episode: EpisodeRecord, system_role: bool = True
) -> Iterator[tuple[StepRecord, list[dict[str, str]]]]:
    """(step, messages ending with that step's assistant reply) for every turn the policy played."""
    cfg = rollout
    system = system_message(system_prompt_for(cfg, episode.env, episode.info.get("env_options")), episode.goal)
    memory: list[tuple[str, str]] = []  # every earlier turn as the policy shows it, like LLMPolicy's
    for i, st in enumerate(episode.steps):
        if st.info.get("forced"):
            continue  # not the policy's turn: it does not remember it as played
        if len(memory) != i:  # a policy that did not play every earlier turn rebuilds them from text
            memory = [(user_message(s.observation, None), s.action) for s in episode.steps[:i]]
        window_start = 0 if cfg.history < 0 else max(0, i - cfg.history)
        start = min(i, window_start + int(st.info.get("dropped_turns", 0) or 0))
        user = user_message(st.observation, st.admissible, cfg.show_admissible)
        action = assistant_text(st, cfg)
        yield st, turn_messages(system, memory[start:i], user, action, system_role)
        memory.append((user, action))


def sft_records(
    recipe, episodes: Iterable[EpisodeRecord], system_role: bool = True, run_id: int | None = None
) -> Iterator[dict[str, Any]]:
    """One record per policy turn of `episodes` (with steps), rendered for `recipe` (a Recipe or
    its RolloutConfig): see the module docstring. Needs no tokenizer."""
    cfg: RolloutConfig = getattr(recipe, "rollout", recipe)
    for ep in episodes:
        for st, messages in episode_turns(cfg, ep, system_role):
            yield {
                "messages": messages,
                "run_id": run_id if run_id is not None else ep.info.get("run_id"),
                "episode_id": ep.id,
                "task_id": ep.task_id,
                "t": st.t,
                "iteration": ep.iteration,
                "split": ep.split,
                "won": ep.won,
                "valid": st.valid,
                "truncated_observation": bool(st.info.get("truncated_observation", False)),
            }


def rollout_of_run(run) -> RolloutConfig:
    """The rollout section of a run's stored recipe."""
    try:
        data = yaml.safe_load(run.recipe or "") or {}
    except yaml.YAMLError:
        raise UserError(f"run {run.id}: its stored recipe is not YAML") from None
    section = data.get("rollout") if isinstance(data, dict) else None
    try:
        return RolloutConfig.model_validate(section or {})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UserError(f"run {run.id}: its stored recipe's rollout.{where}: {err['msg']}") from None


def export_sft(
    store,
    run,
    out: IO[str],
    iteration: int | None = None,
    split: str | None = None,
    won: bool | None = None,
) -> tuple[int, int]:
    """Write the SFT records of the selected episodes of `run`; returns (episodes, records)."""
    from agentrl.store.queries import iter_episodes

    cfg = rollout_of_run(run)
    n_eps = n_recs = 0
    for page in iter_episodes(store, run.id, iteration, split, won, with_steps=True):
        n_eps += len(page)
        for rec in sft_records(cfg, page, run_id=run.id):
            out.write(json.dumps(rec) + "\n")
            n_recs += 1
    return n_eps, n_recs
