"""RayEnvPool: the env pool on Ray actors keeps EnvPool's contract (same results, per-episode errors,
timeouts, dead actors replaced and their other episodes rebuilt by replay). A local Ray instance."""

import ipaddress
import time

import pytest

ray = pytest.importorskip("ray")

from agentrl.envs.base import Observation, Transition  # noqa: E402
from agentrl.envs.pool import EnvFailure, EnvPool  # noqa: E402
from agentrl.runtime.ray_envs import RayEnvPool  # noqa: E402

pytestmark = pytest.mark.ray

# chain-3's exits, room by room (toy.EXITS[i % 6])
CHAIN = ["go north", "go east", "climb up"]


@pytest.fixture(scope="module")
def local_ray():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ours = not ray.is_initialized()
        if ours:
            ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            if ours:
                ray.shutdown()


def _wait_dead(handle, timeout=20.0):
    """ray.kill is asynchronous: wait until the actor answers with its death."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            ray.get(handle.node_ip.remote(), timeout=timeout)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("actor still alive")


# slot -> (task, scripted actions: expert moves, invalid ones and garbage)
SCRIPT = {
    0: ("toy/chain-4/seed-5", ["go north", "look", "", "go east", "quit", "climb up\\", "climb up", "go west"]),
    1: ("toy/pick-4/seed-1", ["open the door", "open the red door"]),
    2: ("toy/chain-3/seed-2", ["go east", "go north", "go\nnorth", "go east", "climb up"]),
    3: ("toy/echo/seed-0", ["hello", "\\", "\x00\x01\x1b[2J", "x" * 500, "say\nmore", "restart"]),
    4: ("toy/pick-3/seed-7", ["open the blue door"]),
}


def _play(pool):
    out = [pool.reset([(s, task, s) for s, (task, _) in SCRIPT.items()])]
    for t in range(max(len(acts) for _, acts in SCRIPT.values())):
        out.append(pool.step([(s, acts[t]) for s, (_, acts) in SCRIPT.items() if t < len(acts)]))
    pool.release(1)
    out.append(pool.reset([(1, "toy/chain-3/seed-4", 4), (4, "toy/pick-2/seed-0", 0)]))  # envs reused
    out.append(pool.step([(1, "go north"), (4, "open the red door")]))
    return out


def test_same_episodes_as_the_local_pool(local_ray):
    with EnvPool(workers=0) as pool:
        expected = _play(pool)
    with RayEnvPool(actors=2, step_timeout=10) as pool:
        got = _play(pool)
        ip = pool.placement(0)
        assert ip == pool.placement(2) and pool.placement(1) is not None
        assert pool.restarts == 0
    assert got == expected
    assert all(isinstance(r, (Observation, Transition)) for batch in got for r in batch)
    assert got[8][0].won and got[2][1].won  # chain-4 walked out, the red door opened
    # placement: the IP of the (only) node hosting the actors
    ipaddress.ip_address(ip)
    assert ip == ray.util.get_node_ip_address()


def test_env_exception_ends_only_its_episode(local_ray):
    with RayEnvPool(actors=1, step_timeout=10) as pool:
        res = pool.reset([(0, "toy/nonsense/seed-0", 0), (1, "toy/pick-2/seed-0", 0)])
        assert isinstance(res[0], EnvFailure) and res[0].error.startswith("UserError: ")
        assert "toy/nonsense" in res[0].error
        assert isinstance(res[1], Observation)
        # slot 0's env was built but never reset: its step raises inside the env
        res = pool.step([(0, "go north"), (1, "open the red door")])
        assert res[0] == EnvFailure("RuntimeError: step() before reset()")
        assert isinstance(res[1], Transition) and res[1].won
        assert pool.restarts == 0


def test_hung_env_times_out_and_co_hosted_episodes_go_on(local_ray):
    with RayEnvPool(actors=2, step_timeout=1.0) as pool:
        # slots 0 and 2 share actor 0 with the hanging env in slot 4
        tasks = {0: "toy/chain-3/seed-0", 1: "toy/chain-3/seed-1", 2: "toy/chain-3/seed-2", 4: "toy/hang/seed-0"}
        obs = pool.reset([(s, t, 0) for s, t in tasks.items()])
        assert all(isinstance(o, Observation) for o in obs)
        pool.step([(s, CHAIN[0]) for s in (0, 1, 2)])  # one step in, so a rebuild must replay it
        t0 = time.monotonic()
        res = pool.step([(4, "wait"), (0, CHAIN[1]), (2, CHAIN[1])])
        assert time.monotonic() - t0 < 10
        assert res[0] == EnvFailure("env step timed out after 1s")
        assert pool.restarts == 1
        # the co-hosted episodes were rebuilt on the new actor and advanced correctly
        assert [r.observation.text for r in res[1:]] == ["You are in room 3 of 3. Exits lead in every direction."] * 2
        res = pool.step([(0, CHAIN[2]), (2, CHAIN[2]), (1, CHAIN[1])])
        assert res[0].won and res[1].won and not res[2].won
        assert pool.restarts == 1


def test_killed_actor_fails_the_first_request_it_gets_and_rebuilds_the_rest(local_ray):
    """Semantics (module docstring): a dead actor fails the first request it had not answered
    (here the first of the next batch: it died idle), every other episode it hosted, in the batch
    or not, is rebuilt on a replacement by replay and goes on."""
    with RayEnvPool(actors=2, step_timeout=10) as pool:
        for s in range(5):
            pool.reset([(s, f"toy/chain-3/seed-{s}", s)])
        pool.step([(s, CHAIN[0]) for s in range(5)])
        old = pool._actors[0]  # hosts slots 0, 2, 4
        ip = pool.placement(0)
        ray.kill(old)
        _wait_dead(old)
        res = pool.step([(2, CHAIN[1]), (0, CHAIN[1]), (1, CHAIN[1])])
        assert isinstance(res[0], EnvFailure)
        assert res[0].error.startswith("env actor died: ") and "ray.kill" in res[0].error
        assert res[0].error.endswith(f"(node {ip})")
        assert [r.observation.text for r in res[1:]] == ["You are in room 3 of 3. Exits lead in every direction."] * 2
        assert pool.restarts == 1 and pool._actors[0] is not old
        # slot 4 had no request in that batch: it was rebuilt too
        res = pool.step([(4, CHAIN[1]), (0, CHAIN[2]), (1, CHAIN[2])])
        assert isinstance(res[0], Transition) and not res[0].terminated
        assert res[1].won and res[2].won
        assert pool.placement(4) == ip  # the replacement's node (one node here)
        # the failed slot takes a new episode
        obs = pool.reset([(2, "toy/pick-2/seed-0", 0)])
        assert isinstance(obs[0], Observation) and pool.restarts == 1


def test_crashing_env_kills_its_actor_others_go_on_and_a_failed_rebuild_is_told_next(local_ray):
    with RayEnvPool(actors=1, step_timeout=10) as pool:
        obs = pool.reset([(0, "toy/crash/seed-0", 0), (1, "toy/crash/seed-1", 0), (2, "toy/chain-3/seed-2", 2)])
        assert all(isinstance(o, Observation) for o in obs)
        assert isinstance(pool.step([(2, CHAIN[0])])[0], Transition)
        # make slot 1's replay crash too (as if its env were not deterministic)
        pool._slots[1].actions.append("wait")
        res = pool.step([(0, "anything"), (2, CHAIN[1])])
        assert isinstance(res[0], EnvFailure) and res[0].error.startswith("env actor died: ")
        assert "worker process has died" in res[0].error
        assert isinstance(res[1], Transition) and res[1].observation.text.startswith("You are in room 3 of 3")
        assert pool.restarts == 2  # the crash, then slot 1's replay
        res = pool.step([(1, "wait"), (2, CHAIN[2])])
        assert isinstance(res[0], EnvFailure) and res[0].error.startswith("could not rebuild env: env actor died: ")
        assert isinstance(res[1], Transition) and res[1].won
        assert isinstance(pool.reset([(1, "toy/pick-4/seed-3", 0)])[0], Observation)


def test_no_ray_error_escapes(local_ray, monkeypatch):
    with RayEnvPool(actors=1, step_timeout=10) as pool:
        assert isinstance(pool.reset([(0, "toy/chain-3/seed-0", 0), (1, "toy/chain-3/seed-1", 1)])[0], Observation)

        def broken(*a, **k):
            raise ray.exceptions.RaySystemError("the GCS went away")

        with monkeypatch.context() as m:
            m.setattr(ray, "wait", broken)
            res = pool.step([(0, CHAIN[0])])
        assert isinstance(res[0], EnvFailure) and res[0].error.startswith("env pool error: RaySystemError")
        res = pool.step([(1, CHAIN[0])])  # its actor was abandoned with the failed batch
        assert isinstance(res[0], EnvFailure) and res[0].error.startswith("could not rebuild env: env pool error")
        obs = pool.reset([(0, "toy/chain-3/seed-0", 0)])
        assert isinstance(obs[0], Observation)


def test_needs_ray_initialised(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError, match="Ray initialised"):
        RayEnvPool(actors=1)


def test_env_options_reach_the_actors_adapters(local_ray):
    """Issue 17: `env_options` are passed to every adapter an actor makes, as in EnvPool's workers."""
    options = {"refused_commands": ["go"]}
    with RayEnvPool(actors=1, step_timeout=10, env_options=options) as pool:
        assert pool.env_options == options
        pool.reset([(0, "gym:agentrl/ToyText-v0/seed-0", 0)])
        (tr,) = pool.step([(0, "go north")])
    assert not tr.valid and tr.observation.text == "That command is not allowed."
