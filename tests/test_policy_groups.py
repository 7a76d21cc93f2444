"""Groups: G episodes of a task start from the same prompt, which is prefilled once and shared."""

import pytest
import torch

from agentrl.config import RolloutConfig
from agentrl.envs.base import Observation
from agentrl.policy.base import TurnContext
from agentrl.policy.hf import HFPolicy
from agentrl.policy.logprobs import recompute_logprobs
from agentrl.policy.model import builtin_tokenizer, tiny_model

CMDS = ["go north", "go north east", "go south", "take key", "open door"]


@pytest.fixture(scope="module")
def model_tok():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_model(builtin_tokenizer(), seed=0)
    torch.set_num_threads(n)


def _obs(task: int, t: int, action: str = "") -> Observation:
    return Observation(text=f"Room {task}, turn {t}. {action}".strip(), admissible=CMDS, goal=f"task {task}")


@pytest.mark.parametrize("mode", ["admissible", "free"])
def test_shared_turn0_prefill_keeps_token_fidelity(model_tok, mode):
    model, tok = model_tok
    pol = HFPolicy(
        model,
        tok,
        RolloutConfig(action_mode=mode, history=-1, batch_size=16, max_new_tokens=6, temperature=1.0),
        seed=1,
    )
    tasks = [0, 0, 0, 0, 1, 1, 1, 2]  # three groups: 4 + 3 + 1 episodes
    hist: dict[int, list] = {k: [] for k in range(len(tasks))}
    steps = []
    for t in range(3):
        ctxs = [
            TurnContext(
                key=k,
                task_id=f"toy/{tasks[k]}",
                t=t,
                observation=_obs(tasks[k], t, hist[k][-1][1] if hist[k] else ""),
                history=list(hist[k]),
            )
            for k in hist
        ]
        before = pol.stats.prefilled_tokens
        acts = pol.act(ctxs)
        if t == 0:  # three distinct prompts were prefilled, not eight
            n0 = len(acts[0].prompt_ids)
            assert pol.stats.prefilled_tokens - before == n0 + len(acts[4].prompt_ids) + len(acts[7].prompt_ids)
            assert acts[0].prompt_ids == acts[3].prompt_ids != acts[4].prompt_ids
        for c, a in zip(ctxs, acts):
            steps.append((a, c.observation.admissible))
            hist[c.key].append((c.observation.text, a.text))
    # sampling still differs within a group (rows are sampled independently)
    assert len({tuple(a.action_ids) for a, _ in steps[:4]} | {tuple(a.action_ids) for a, _ in steps[8:12]}) > 1
    lp = recompute_logprobs(
        model,
        tok,
        [a.prompt_ids for a, _ in steps],
        [a.action_ids for a, _ in steps],
        mode,
        [adm for _, adm in steps],
        1.0,
    )
    diff = max(abs(x - y) for (a, _), r in zip(steps, lp) for x, y in zip(a.logprobs, r))
    assert diff <= 1e-4
