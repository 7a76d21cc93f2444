"""The env pool: parallel stepping, per-step timeout, crash restart, garbage actions."""

import time

from agentrl.envs.base import Observation, Transition
from agentrl.envs.pool import EnvFailure, EnvPool

GARBAGE = ["", "   ", "\\", "look\\", "\\f", "\x00\x01\x1b[2J", "quit", "restart", "save", "x" * 10_000, "go\nnorth"]


def test_pool_steps_many_envs_in_workers():
    with EnvPool(workers=2, step_timeout=10) as pool:
        obs = pool.reset([(i, f"toy/chain-3/seed-{i}", i) for i in range(6)])
        assert all(isinstance(o, Observation) for o in obs)
        plans = [o.info["expert_plan"] for o in obs]
        for t in range(3):
            res = pool.step([(i, plans[i][t]) for i in range(6)])
            assert all(isinstance(r, Transition) for r in res)
        assert all(r.won and r.terminated for r in res)


def test_hung_env_fails_only_its_episode_and_pool_goes_on():
    with EnvPool(workers=2, step_timeout=1.0) as pool:
        # slots 0 and 2 share worker 0 with the hanging env in slot 4
        tasks = {0: "toy/chain-3/seed-0", 1: "toy/chain-3/seed-1", 2: "toy/chain-3/seed-2", 4: "toy/hang/seed-0"}
        obs = pool.reset([(s, t, 0) for s, t in tasks.items()])
        first = {s: o.info.get("expert_plan", ["x"])[0] for s, o in zip(tasks, obs)}
        pool.step([(s, first[s]) for s in (0, 1, 2)])  # one step in, so a rebuild must re-play it
        t0 = time.monotonic()
        res = pool.step([(4, "wait"), (0, "go east"), (2, "go east")])
        assert time.monotonic() - t0 < 8
        assert isinstance(res[0], EnvFailure) and "timed out" in res[0].error
        # the co-hosted episodes were rebuilt and still advanced correctly
        assert isinstance(res[1], Transition) and isinstance(res[2], Transition)
        assert pool.restarts == 1
        res = pool.step([(0, "climb up"), (2, "climb up"), (1, "go east")])
        assert res[0].won and res[1].won and not res[2].won


def test_crashing_env_is_an_error_and_worker_restarts():
    with EnvPool(workers=1, step_timeout=5) as pool:
        pool.reset([(0, "toy/crash/seed-0", 0), (1, "toy/pick-4/seed-0", 0)])
        res = pool.step([(0, "anything"), (1, "open the red door")])
        assert isinstance(res[0], EnvFailure) and "crashed" in res[0].error
        assert isinstance(res[1], Transition) and res[1].won
        # the restarted worker serves new episodes
        obs = pool.reset([(0, "toy/pick-4/seed-3", 0)])
        assert isinstance(obs[0], Observation)


def test_env_exception_is_an_episode_error_not_a_pool_error():
    with EnvPool(workers=1, step_timeout=5) as pool:
        res = pool.reset([(0, "toy/nonsense/seed-0", 0), (1, "toy/pick-2/seed-0", 0)])
        assert isinstance(res[0], EnvFailure) and "toy" in res[0].error
        assert isinstance(res[1], Observation)


def test_garbage_actions_never_crash_or_hang():
    with EnvPool(workers=1, step_timeout=5) as pool:
        for _i, g in enumerate(GARBAGE):
            pool.reset([(0, "toy/echo/seed-0", 0)])
            res = pool.step([(0, g)])[0]
            assert isinstance(res, Transition), (g, res)
            received = res.observation.info.get("received", "")
            assert "\\" not in received and "\x00" not in received and len(received) <= 200


def test_in_process_pool_matches_worker_pool():
    def play(workers):
        with EnvPool(workers=workers, step_timeout=5) as pool:
            o = pool.reset([(0, "toy/chain-4/seed-5", 5)])[0]
            out = [o.text]
            for a in ["go north", "look", "go east", "go west"]:
                r = pool.step([(0, a)])[0]
                out.append((r.observation.text, r.reward, r.valid))
            return out

    assert play(0) == play(2)


def test_sigint_to_a_worker_is_ignored_quietly(capfd):
    """Defect 15 (issue 11): Ctrl-C sends SIGINT to the whole process group; env workers
    printed KeyboardInterrupt tracebacks and died. They must ignore it (the parent stops
    cleanly and closes them)."""
    import os
    import signal

    with EnvPool(workers=1, step_timeout=10) as pool:
        obs = pool.reset([(0, "toy/chain-3/seed-0", 0)])
        os.kill(pool._procs[0].pid, signal.SIGINT)
        time.sleep(0.5)
        assert pool._procs[0].is_alive()
        res = pool.step([(0, obs[0].info["expert_plan"][0])])
        assert isinstance(res[0], Transition) and pool.restarts == 0
    assert "KeyboardInterrupt" not in capfd.readouterr().err


def test_a_worker_killed_between_batches_loses_no_episode():
    """A worker that died while idle (killed from outside) is restarted and the episodes it hosted are
    rebuilt there by replay before the next batch: they go on as if nothing happened."""
    import os
    import signal

    with EnvPool(workers=2, step_timeout=10) as pool:
        obs = pool.reset([(i, f"toy/chain-3/seed-{i}", i) for i in range(4)])
        plans = [o.info["expert_plan"] for o in obs]
        pool.step([(i, plans[i][0]) for i in range(4)])
        victim = pool._procs[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
        for t in (1, 2):
            res = pool.step([(i, plans[i][t]) for i in range(4)])
            assert all(isinstance(r, Transition) for r in res), res
        assert all(r.won for r in res) and pool.restarts == 1
