"""The HF engine's decoding loop, side by side in one run (the engine comparison is bench/rollout.py).

    python bench/hf_engine.py                      # default model, 16 episodes x 2 turns (~4 min on 2 cores)
    python bench/hf_engine.py --episodes 8 --turns 2 --max-new-tokens 16   # quicker
    python bench/hf_engine.py --tiny               # random tiny model (smoke test, seconds)

(a) batched (all live episodes per forward pass) vs one episode at a time, free text;
(b) HFPolicy vs a bare `model.generate` on the same first-turn prompts (greedy, so both
    do identical work; also checks they produce the same tokens);
(c) KV-cache reuse across turns on vs off (admissible mode, history = all turns).

The env is a fake text game defined here (observation lengths differ per episode so
batches are padded), so the figures are the policy's alone.
"""

from __future__ import annotations

import argparse
import time

import torch

from agentrl.config import ModelConfig, RolloutConfig
from agentrl.envs.base import Observation
from agentrl.policy.base import TurnContext
from agentrl.policy.hf import HFPolicy

ROOMS = ["kitchen", "pantry", "bedroom", "corridor", "garden", "cellar", "attic", "study"]
THINGS = [
    "a wooden table",
    "a closed fridge",
    "a rusty key",
    "an old lamp",
    "a red apple",
    "a locked chest",
    "a pile of books",
    "a muddy boot",
]


def say(*a) -> None:
    print(*a, flush=True)


def fake_obs(ep: int, t: int) -> Observation:
    room = ROOMS[(ep + t) % len(ROOMS)]
    seen = ", ".join(THINGS[(ep + t + j) % len(THINGS)] for j in range(2 + ep % 5))
    text = f"-= {room.title()} =-\nYou are in the {room}. You see {seen}." + " Dust covers the floor." * (ep % 3)
    exits = ["go north", "go south", "go east", "go west", "go north east"][: 2 + (ep + t) % 4]
    cmds = exits + [f"take {x.split(' ', 1)[1]}" for x in THINGS[:3]] + ["open door", "look", "inventory"]
    return Observation(text=text, admissible=cmds, goal="Find the rusty key and open the locked chest.")


def play(policy: HFPolicy, episodes: int, turns: int) -> dict:
    """All episodes live for `turns` turns; returns wall time and counters."""
    hist = {k: [] for k in range(episodes)}
    gen = 0
    t0 = time.perf_counter()
    for t in range(turns):
        ctxs = [
            TurnContext(key=k, task_id=f"fake/{k}", t=t, observation=fake_obs(k, t), history=list(h))
            for k, h in hist.items()
        ]
        for c, a in zip(ctxs, policy.act(ctxs)):
            hist[c.key].append((c.observation.text, a.text))
            gen += len(a.action_ids)
    wall = time.perf_counter() - t0
    for k in hist:
        policy.end_episode(k)
    s = policy.stats
    return dict(
        wall=wall,
        steps=episodes * turns,
        gen=gen,
        prompt=s.prompt_tokens,
        prefill=s.prefilled_tokens,
        prefill_s=s.prefill_s,
        decode_s=s.decode_s,
    )


def row(name: str, r: dict) -> str:
    return (
        f"  {name:<28} {r['wall']:8.1f} s {r['steps'] / r['wall']:8.2f} steps/s "
        f"{r['gen'] / r['wall']:8.1f} gen tok/s"
        f"   prefill {r['prefill_s']:6.1f} s ({r['prefill']} of {r['prompt']} prompt tokens)"
        f"   decode {r['decode_s']:6.1f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tiny", action="store_true", help="random tiny model instead (smoke test)")
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0 = torch default; on a shared 2-core machine 1 is several times faster)",
    )
    ap.add_argument("--only", default="abc", help="which comparisons to run, e.g. 'ac'")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    if args.tiny:
        from agentrl.policy.model import tiny_model

        model, tok = tiny_model(hidden=128, layers=4, heads=4)
    else:
        from agentrl.policy.model import load_model

        model, tok = load_model(ModelConfig(path=args.model))
    say(
        f"model {'tiny' if args.tiny else args.model}: loaded in {time.perf_counter() - t0:.1f} s, "
        f"{torch.get_num_threads()} threads, {args.episodes} episodes x {args.turns} turns, "
        f"max_new_tokens {args.max_new_tokens}"
    )
    E, T = args.episodes, args.turns
    free = RolloutConfig(action_mode="free", history=-1, max_new_tokens=args.max_new_tokens, batch_size=E)
    HFPolicy(model, tok, free).act([TurnContext(0, "w", 0, fake_obs(0, 0))])  # warm-up

    if "a" in args.only:
        say("(a) batched vs one episode at a time (free text, KV reuse on, sampling T=1.0)")
        b = play(HFPolicy(model, tok, free, seed=0), E, T)
        one = play(HFPolicy(model, tok, free.model_copy(update={"batch_size": 1}), seed=0), E, T)
        say(row(f"batched (batch {E})", b))
        say(row("one at a time (batch 1)", one))
        say(
            f"  speed-up: {b['steps'] / b['wall'] / (one['steps'] / one['wall']):.2f}x steps/s, "
            f"{b['gen'] / b['wall'] / (one['gen'] / one['wall']):.2f}x gen tok/s; decode loop alone "
            f"{b['gen'] / b['decode_s'] / (one['gen'] / one['decode_s']):.2f}x tok/s"
        )

    if "b" in args.only:
        say("(b) HFPolicy vs bare model.generate on the same first-turn prompts (greedy, batch of all)")
        pol = HFPolicy(model, tok, free, greedy=True, kv_reuse=False)
        ctxs = [TurnContext(k, f"fake/{k}", 0, fake_obs(k, 0)) for k in range(E)]
        t1 = time.perf_counter()
        acts = pol.act(ctxs)
        t_pol = time.perf_counter() - t1
        prompts = [a.prompt_ids for a in acts]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        t1 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=args.max_new_tokens,
                eos_token_id=sorted(pol.fmt.stop_ids),
                pad_token_id=tok.pad_token_id,
            )
        t_gen = time.perf_counter() - t1
        stops = pol.fmt.stop_ids
        same = 0
        for a, o in zip(acts, out[:, width:].tolist()):
            cut = next((j + 1 for j, x in enumerate(o) if x in stops), len(o))
            same += a.action_ids == o[:cut]
        n_gen = sum(len(a.action_ids) for a in acts)
        say(f"  {'HFPolicy.act':<28} {t_pol:8.2f} s   {n_gen / t_pol:8.1f} gen tok/s")
        say(f"  {'model.generate':<28} {t_gen:8.2f} s   {n_gen / t_gen:8.1f} gen tok/s")
        say(f"  overhead: {100 * (t_pol / t_gen - 1):+.1f}%   identical outputs: {same}/{E}")

    if "c" in args.only:
        say("(c) KV-cache reuse across turns (admissible mode, history = all turns, sampling)")
        adm = RolloutConfig(action_mode="admissible", history=-1, batch_size=E)
        on = play(HFPolicy(model, tok, adm, seed=0, kv_reuse=True), E, T)
        off = play(HFPolicy(model, tok, adm, seed=0, kv_reuse=False), E, T)
        say(row("KV reuse on", on))
        say(row("KV reuse off", off))
        say(f"  speed-up: {off['wall'] / on['wall']:.2f}x wall")
    say(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
