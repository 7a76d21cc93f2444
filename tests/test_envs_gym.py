"""Toy envs, the generic gymnasium wrapper (gym:<id>) and the agentrl/* gymnasium registrations."""

import subprocess
import sys

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from agentrl.envs.gym import GymTextEnv, parse_task
from agentrl.envs.gymnasium_api import AdapterEnv, fit_text, register_gymnasium_envs
from agentrl.envs.registry import make_env
from agentrl.envs.toy import EXITS, GOAL, PICK_WIN, ToyEnv
from agentrl.errors import UserError

register_gymnasium_envs()


# ---------------------------------------------------------------- toy envs


def test_pick_wins_only_with_the_red_door_and_order_depends_on_seed():
    env = ToyEnv()
    orders = set()
    for seed in range(6):
        obs = env.reset(f"toy/pick-4/seed-{seed}")
        assert sorted(obs.admissible) == sorted(f"open the {c} door" for c in ("red", "blue", "green", "yellow"))
        assert obs.goal == GOAL and "red" not in obs.goal
        assert obs.info["expert_plan"] == [PICK_WIN]
        orders.add(tuple(obs.admissible))
        for cmd in obs.admissible:
            env.reset(f"toy/pick-4/seed-{seed}")
            tr = env.step(cmd)
            assert tr.terminated and tr.valid
            assert (tr.reward, tr.won) == ((1.0, True) if cmd == "open the red door" else (0.0, False))
    assert len(orders) > 1  # seeds shuffle the list, so position alone cannot be learned
    assert ToyEnv().reset("toy/pick-4/seed-3").admissible == ToyEnv().reset("toy/pick-4/seed-3").admissible


def test_pick_invalid_text_changes_nothing():
    env = ToyEnv()
    obs = env.reset("toy/pick-3/seed-0")
    for cmd in ["dance", "quit", ""]:
        tr = env.step(cmd)
        assert not tr.valid and not tr.terminated and tr.reward == 0
        assert tr.observation.anchor == obs.anchor and tr.observation.admissible == obs.admissible
    assert env.step("quit").observation.text == "That command is not allowed."
    assert env.step("  open the red\x00door \n and more").won  # cleaned like the real adapters


def test_chain_advances_only_on_the_fixed_exit_with_repeated_anchors():
    env = ToyEnv()
    obs = env.reset("toy/chain-3/seed-7")
    assert obs.info["expert_plan"] == ["go north", "go east", "climb up"] == EXITS[:3]
    anchors, rewards = [], []
    for _room, exit_ in enumerate(obs.info["expert_plan"]):
        wrong = next(c for c in obs.admissible if c != exit_)
        stay = env.step(wrong)  # valid, but nothing changes
        assert stay.valid and stay.reward == 0 and not stay.terminated
        assert stay.observation.text == obs.text and stay.observation.anchor == obs.anchor
        anchors += [obs.anchor, stay.observation.anchor]
        tr = env.step(exit_)
        rewards.append(tr.reward)
        obs = tr.observation
    assert rewards == [0.0, 0.0, 1.0] and tr.won and tr.terminated
    assert anchors[0] == anchors[1] != anchors[2] == anchors[3] != anchors[4]
    assert anchors[2] == "You are in room 2 of 3. Exits lead in every direction."


def test_toy_echo_returns_what_it_received():
    env = ToyEnv()
    env.reset("toy/echo/seed-0")
    tr = env.step("look\\ \x00")
    assert tr.observation.info["received"] == "look\\ \x00" and not tr.terminated


def test_toy_hang_and_crash():
    hang = "from agentrl.envs.toy import ToyEnv; e = ToyEnv(); e.reset('toy/hang/seed-0'); e.step('wait')"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", hang], timeout=3)
    crash = "from agentrl.envs.toy import ToyEnv; e = ToyEnv(); e.reset('toy/crash/seed-0'); e.step('wait')"
    assert subprocess.run([sys.executable, "-c", crash], timeout=30).returncode == 3


def test_bad_toy_task_ids():
    for task in ["toy/pick-1/seed-0", "toy/pick-9/seed-0", "toy/chain-0/seed-0", "toy/nonsense/seed-0", "toy/pick-4"]:
        with pytest.raises(UserError, match="toy"):
            ToyEnv().reset(task)
    assert isinstance(make_env("toy/pick-4/seed-0"), ToyEnv)


# ---------------------------------------------------------------- gym:<id> wrapper


class _CountText(gymnasium.Env):
    """Text env for the wrapper test: 'up' adds 1 to a counter; 3 wins; truncates after 5 steps."""

    def __init__(self):
        self.observation_space = gymnasium.spaces.Text(100, min_length=0)
        self.action_space = gymnasium.spaces.Text(100, min_length=0)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.n, self.t = int(self.np_random.integers(0, 2)), 0
        return f"count {self.n}", {"admissible": ["up", "down"], "goal": "reach 3"}

    def step(self, action):
        self.t += 1
        self.n += {"up": 1, "down": -1}.get(action, 0)
        won = self.n >= 3
        return f"count {self.n}", 1.0 if won else 0.0, won, self.t >= 5 and not won, {"admissible": ["up", "down"]}


class _BoxEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.Discrete(3)
    action_space = gymnasium.spaces.Discrete(2)


gymnasium.register(id="agentrl_test/Count-v0", entry_point=_CountText)
gymnasium.register(id="agentrl_test/Box-v0", entry_point=_BoxEnv)


def test_gym_task_ids():
    assert parse_task("gym:agentrl/ToyText-v0/seed-3") == ("agentrl/ToyText-v0", 3)
    assert parse_task("gym:Foo-v1") == ("Foo-v1", None)
    assert parse_task("gym:mod.sub:Foo-v1/seed-0") == ("mod.sub:Foo-v1", 0)


def test_gym_wrapper_reads_admissible_goal_rewards_and_won():
    env = make_env("gym:agentrl/ToyText-v0/seed-5")
    assert isinstance(env, GymTextEnv)
    obs = env.reset("gym:agentrl/ToyText-v0/seed-5")
    assert obs.goal == GOAL and sorted(obs.admissible) == sorted(EXITS)
    assert obs.anchor == obs.text == "You are in room 1 of 3. Exits lead in every direction."
    assert env.reset("gym:agentrl/ToyText-v0/seed-5").admissible == obs.admissible  # seeded
    rewards = []
    for cmd in ["go south", "go north", "go east", "climb up"]:
        tr = env.step(cmd)
        rewards.append(tr.reward)
    assert rewards == [0.0, 0.0, 0.0, 1.0] and tr.won and tr.terminated and not tr.truncated


def test_gym_wrapper_defaults_seed_from_reset_and_truncation():
    env = GymTextEnv()
    texts = {env.reset("gym:agentrl_test/Count-v0", seed=s).text for s in range(8)}
    assert texts == {"count 0", "count 1"}  # the reset seed reaches the gymnasium env
    obs = env.reset("gym:agentrl_test/Count-v0/seed-1")
    assert obs.admissible == ["up", "down"] and obs.goal == "reach 3"
    start = int(obs.text.split()[1])
    tr = env.step("sideways")
    assert not tr.valid and tr.observation.text == f"count {start}"
    for _ in range(3 - start):
        tr = env.step("up")
    assert tr.won and tr.reward == 1.0 and tr.terminated  # won defaults to reward > 0 and terminated
    env.reset("gym:agentrl_test/Count-v0/seed-1")
    results = [env.step("down") for _ in range(5)]
    assert [r.truncated for r in results] == [False] * 4 + [True]
    assert not any(r.won or r.terminated for r in results)


def test_gym_wrapper_refuses_the_commands_it_is_told_to():
    """Neutral by default: no text-adventure meta commands are refused (the gym env gets `quit`);
    the `refused_commands` option refuses them before the env sees them."""
    env = GymTextEnv()
    obs = env.reset("gym:agentrl_test/Count-v0/seed-0")
    assert env.refused_commands == frozenset() and env.fallback_action is None
    tr = env.step("quit")
    assert tr.observation.text == obs.text and not tr.valid  # reached the env: not admissible there
    env = make_env("gym:agentrl/ToyText-v0/seed-0", {"refused_commands": ["Quit", "save"]})
    obs = env.reset("gym:agentrl/ToyText-v0/seed-0")
    for cmd in ("quit", "QUIT now", "save game"):
        tr = env.step(cmd)
        assert tr.observation.text == "That command is not allowed." and not tr.valid
        assert tr.observation.anchor == obs.anchor


def test_gym_wrapper_errors():
    with pytest.raises(UserError, match="Box|Discrete|text"):
        GymTextEnv().reset("gym:agentrl_test/Box-v0")
    with pytest.raises(UserError, match="NoSuchEnv"):
        GymTextEnv().reset("gym:NoSuchEnv-v0/seed-1")
    with pytest.raises(UserError):
        GymTextEnv().reset("gym:")


# ---------------------------------------------------------------- gymnasium registration


def test_registration_is_idempotent_and_complete():
    register_gymnasium_envs()
    register_gymnasium_envs()
    for env_id in ["agentrl/TextWorld-v0", "agentrl/ALFWorld-v0", "agentrl/Toy-v0", "agentrl/ToyText-v0"]:
        assert env_id in gymnasium.registry


@pytest.mark.parametrize(
    "env_id,kwargs",
    [("agentrl/Toy-v0", {}), ("agentrl/Toy-v0", {"task": "toy/pick-4/seed-1"}), ("agentrl/ToyText-v0", {})],
)
def test_check_env(env_id, kwargs):
    env = gymnasium.make(env_id, **kwargs)
    check_env(env.unwrapped)
    env.close()


def test_adapter_env_info_and_task_switch():
    env = gymnasium.make("agentrl/Toy-v0", task="toy/pick-4/seed-2")
    text, info = env.reset()
    assert info["goal"] == GOAL and PICK_WIN in info["admissible"] and info["anchor"] == text
    assert env.observation_space.contains(text)
    text, reward, terminated, truncated, info = env.step(PICK_WIN)
    assert (reward, terminated, truncated, info["won"], info["valid"]) == (1.0, True, False, True, True)
    text, info = env.reset(options={"task": "toy/chain-2/seed-0"})
    assert info["expert_plan"] == ["go north", "go east"]
    with pytest.raises(UserError, match="not a 'toy' task"):
        env.reset(options={"task": "textworld/w2-o3-q4/seed-0"})
    with pytest.raises(UserError, match="no task"):
        AdapterEnv("gym").reset()


def test_fit_text_keeps_space_membership():
    space = gymnasium.spaces.Text(
        max_length=10, min_length=0, charset=AdapterEnv("toy").observation_space.character_set
    )
    out = fit_text("héllo\x00日本 and more", 10)
    assert out == "héllo??? a" and space.contains(out)
