"""Prompt building at the token level (ARCHITECTURE.md §7).

A prompt is the model's chat template over: a system message (system prompt + goal),
then one user message per turn (observation + admissible commands when given) with
the agent's action as the assistant reply in between, ending with the generation
prompt. It is assembled from token pieces, never by re-tokenizing a whole rendered
chat, so that the agent's earlier actions appear as the exact token ids it generated:

    prompt = head(system, user_s) + piece_s + piece_{s+1} + ... + piece_{t-1}
    piece_i = action_ids_i + suffix(user_{i+1})

`head` is the template rendered for [system, user] with the generation prompt;
`suffix(user)` is the text the template puts between an assistant reply's content and
the next generation prompt (for ChatML: `<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n
<|im_start|>assistant\n`), tokenized on its own; when the action already ends with the
end-of-turn token (admissible mode always, free mode when it stopped by itself) that
token is not repeated. `s` is the first turn shown.

Prefix property (the learner's `concat` layout and the policy's KV-cache reuse rely on
it): `prompt[t+1] == prompt[t] + action_ids[t] + suffix'(user_{t+1})`, so `prompt[t+1]`
starts with `prompt[t] + action_ids[t]`, exactly when
  1. both prompts start at the same turn `s`: always with `history = -1` while nothing
     is dropped for length, and with `history = K` for `t + 1 <= K`;
  2. turns `s..t` are shown with the same user messages (the policy remembers each
     turn's user message as shown, admissible list and any truncation included; a
     policy that did not play turns `s..t` itself rebuilds them from the context's
     history without admissible lists, so its prompts differ from the original ones);
  3. the system prompt and goal did not change.
Whenever a prompt would exceed `max_prompt_tokens`, the oldest shown turns are dropped
(which moves `s` and breaks the property for that step), then as a last resort the
current observation is cut; when even that cannot fit, `PromptTooLong` (the LLM policy ends that
episode with it, never the run).

`rollout.show_admissible` (all | none | K) says how much of the admissible list a user message
lists; the built-in system prompts open with the adapter's `system_intro`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from agentrl.envs.base import TEXT_ADVENTURE_INTRO
from agentrl.errors import UserError

_SENTINEL = "ACTIONSENTINEL"
TRUNCATION_MARK = " [...]"

# What follows the adapter's `system_intro` in the built-in system prompts, per action mode / parser.
SYSTEM_PROMPT_RULES = {
    "admissible": (
        "Each turn you read what happened and answer with "
        "exactly one command from the list of valid commands, and nothing else."
    ),
    "tag": (
        "Each turn you read what happened and answer with "
        "exactly one short command inside action tags, for example <action>go north</action>."
    ),
    "last_line": "Each turn you read what happened and answer with exactly one short command, for example: go north",
}


class PromptTooLong(UserError):
    """Even the current turn alone, with the observation cut, does not fit `max_prompt_tokens`."""


def default_system_prompt(action_mode: str, action_parser: str = "tag", intro: str = TEXT_ADVENTURE_INTRO) -> str:
    """The built-in system prompt: the adapter's `system_intro`, then the rules of the action mode."""
    rules = SYSTEM_PROMPT_RULES["admissible" if action_mode == "admissible" else action_parser]
    return f"{intro} {rules}" if intro else rules


def system_prompt_for(rollout, env: str | None = None, options=None) -> str:
    """The system prompt the LLM policy uses under a `RolloutConfig` (before the goal is added) for
    episodes of adapter `env` (built with `options`): the recipe's `system_prompt`, else the built-in
    default of its action mode and parser opened by the adapter's `system_intro` (env None: the
    text-adventure one)."""
    if rollout.system_prompt:
        return rollout.system_prompt
    intro = TEXT_ADVENTURE_INTRO
    if env is not None:
        from agentrl.envs.registry import attributes_for

        intro = attributes_for(env, options).system_intro
    return default_system_prompt(rollout.action_mode, rollout.action_parser, intro)


def system_message(system_prompt: str, goal: str) -> str:
    return f"{system_prompt}\n\nGoal: {goal}" if goal.strip() else system_prompt


def user_message(observation: str, admissible: list[str] | None, show: str | int = "all") -> str:
    """What the agent reads in one turn: the observation, then the valid commands if known.
    `show` (`rollout.show_admissible`): all of them, none, or the first K followed by
    "(N more not shown)"."""
    text = observation.strip()
    if admissible and show != "none":
        listed = admissible if show == "all" or len(admissible) <= int(show) else admissible[: int(show)]
        text += "\n\nValid commands:\n" + "\n".join(f"- {c}" for c in listed)
        if len(listed) < len(admissible):
            text += f"\n({len(admissible) - len(listed)} more not shown)"
    return text


class ChatFormat:
    """Token pieces of a tokenizer's chat template (see the module docstring)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self._suffixes: dict[str, list[int]] = {}
        self.system_role = self._supports_system()
        base = self._render("S", [("user", "X")])
        full = self._render("S", [("user", "X"), ("assistant", _SENTINEL), ("user", "Y")])
        if not (full.startswith(base) and full[len(base) :].startswith(_SENTINEL)):
            raise UserError("this model's chat template does not render a conversation turn by turn (unsupported)")
        first = self.encode(full[len(base) + len(_SENTINEL) :])
        specials = set(tokenizer.all_special_ids)
        # the end-of-turn token: the template's first token after an assistant reply, if special
        self.eot_id: int = first[0] if first and first[0] in specials else tokenizer.eos_token_id
        self.stop_ids: frozenset[int] = frozenset(i for i in (self.eot_id, tokenizer.eos_token_id) if i is not None)

    def _supports_system(self) -> bool:
        try:
            self.tok.apply_chat_template(
                [{"role": "system", "content": "S"}, {"role": "user", "content": "X"}],
                tokenize=False,
                add_generation_prompt=True,
            )
            return True
        except Exception:  # templates that refuse a system role (raise inside jinja)
            return False

    def _render(self, system: str, messages: list[tuple[str, str]]) -> str:
        msgs = [{"role": r, "content": c} for r, c in messages]
        if self.system_role:
            msgs = [{"role": "system", "content": system}] + msgs
        else:
            msgs[0] = {"role": "user", "content": f"{system}\n\n{msgs[0]['content']}"}
        return self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def head(self, system: str, user: str) -> list[int]:
        """[system, user] + generation prompt."""
        return self.encode(self._render(system, [("user", user)]))

    def suffix(self, user: str) -> list[int]:
        """End of an assistant reply + the next user message + generation prompt (memoised)."""
        ids = self._suffixes.get(user)
        if ids is None:
            if len(self._suffixes) > 4096:
                self._suffixes.clear()
            ids = self._suffixes[user] = self._suffix(user)
        return list(ids)

    def _suffix(self, user: str) -> list[int]:
        base = self._render("S", [("user", "X")])
        full = self._render("S", [("user", "X"), ("assistant", _SENTINEL), ("user", user)])
        return self.encode(full[len(base) + len(_SENTINEL) :])

    def piece(self, action_ids: list[int], next_user: str) -> list[int]:
        """An assistant reply followed by the next user message and generation prompt."""
        suf = self.suffix(next_user)
        if action_ids and action_ids[-1] == self.eot_id and suf and suf[0] == self.eot_id:
            suf = suf[1:]
        return list(action_ids) + suf


@functools.lru_cache(maxsize=8)
def chat_format(tokenizer) -> ChatFormat:
    return ChatFormat(tokenizer)


@dataclass
class Turn:
    """One earlier turn as shown in prompts: the user message and the assistant's token ids."""

    user: str
    action_ids: list[int]


@dataclass
class Prompt:
    ids: list[int]
    user: str  # the current user message as shown (after any truncation)
    first_turn: int  # index (in the episode) of the first earlier turn shown
    dropped_turns: int  # turns of the history window left out to fit max_prompt_tokens
    truncated: bool  # the current observation was cut to fit


def build_prompt(
    fmt: ChatFormat,
    system: str,
    turns: list[Turn],
    observation: str,
    admissible: list[str] | None,
    history: int,
    max_prompt_tokens: int,
    show_admissible: str | int = "all",
) -> Prompt:
    """The prompt for the next turn given all earlier `turns` of the episode.

    `history` = number of earlier turns shown (-1 = all). Turns are dropped oldest first
    until the prompt fits `max_prompt_tokens`; then the observation is cut (its start is
    kept, followed by " [...]"). Raises PromptTooLong (a UserError) if even that cannot fit.
    """
    window_start = 0 if history < 0 else max(0, len(turns) - history)
    start = window_start
    user = user_message(observation, admissible, show_admissible)
    truncated = False
    for _ in range(8):  # observation-cutting rounds (normally 0 or 1)
        nexts = [t.user for t in turns[start + 1 :]] + [user]
        pieces = [fmt.piece(t.action_ids, nu) for t, nu in zip(turns[start:], nexts)]
        tails = [0] * (len(pieces) + 1)  # tails[k] = tokens of pieces[k:]
        for k in range(len(pieces) - 1, -1, -1):
            tails[k] = tails[k + 1] + len(pieces[k])
        for k in range(len(pieces) + 1):
            if k < len(pieces) and len(pieces[k]) + tails[k + 1] > max_prompt_tokens:
                continue  # cannot fit whatever the head is
            head = fmt.head(system, turns[start + k].user if k < len(pieces) else user)
            if len(head) + tails[k] <= max_prompt_tokens:
                ids = head + [i for p in pieces[k:] for i in p]
                return Prompt(ids, user, start + k, start + k - window_start, truncated)
        # even the current turn alone is too long: cut the observation and retry
        over = len(fmt.head(system, user)) - max_prompt_tokens
        obs_ids = fmt.encode(observation)
        keep = len(obs_ids) - over - len(fmt.encode(TRUNCATION_MARK)) - 2
        if keep <= 0:
            listed = "" if not admissible or show_admissible == "none" else f" and {len(admissible)} valid commands"
            if listed and show_admissible != "all" and len(admissible) > int(show_admissible):
                listed = f" and {show_admissible} of {len(admissible)} valid commands"
            raise PromptTooLong(
                f"the prompt does not fit max_prompt_tokens={max_prompt_tokens}: the system prompt{listed} "
                f"alone take {len(fmt.head(system, user_message('', admissible, show_admissible)))} tokens "
                "(list fewer with rollout.show_admissible: K, or raise rollout.max_prompt_tokens)"
            )
        observation = fmt.tok.decode(obs_ids[:keep]) + TRUNCATION_MARK
        user = user_message(observation, admissible, show_admissible)
        truncated = True
        start = len(turns)  # only the current turn is left
    raise PromptTooLong(f"cannot fit the prompt into max_prompt_tokens={max_prompt_tokens}")
