"""Env pool: many environments stepped in parallel worker processes (ARCHITECTURE.md §3).

Each episode in flight lives in a *slot*; slot k is hosted by worker k % W. A batch
of requests (resets or steps, one per slot) is split by worker, each worker handles
its share in order, and the results come back as they finish. A step that takes
longer than `step_timeout`, or a worker that dies, fails only the episode whose
request was running: the worker is restarted and the other episodes it hosted are
rebuilt on the new worker by re-playing their actions (envs are deterministic given
task id and seed), so the run goes on.

`workers=0` steps every env in this process (no timeout protection). `env_options` (the recipe's
`env.options` over its suite's) are passed to every adapter the pool makes.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from agentrl.envs.base import Observation, TextEnv, Transition
from agentrl.envs.registry import env_name_of, make_env


@dataclass
class EnvFailure:
    """Returned in place of an Observation/Transition when an env failed."""

    error: str


def forget_failed(slots: dict, keys: list[int], results: list) -> list:
    """Forget the slot of every request that failed (its episode has ended); returns `results`."""
    for slot, res in zip(keys, results):
        if isinstance(res, EnvFailure):
            slots.pop(slot, None)
    return results


@dataclass
class _Slot:
    task: str
    seed: int | None
    actions: list[str] = field(default_factory=list)


class _Envs:
    """The envs of one process, keyed by slot; shared by the in-process and worker paths (and by
    `agentrl envs check`).

    Action hygiene happens here, for every adapter, by the adapter's own rules
    (`TextEnv.clean_action`: its hygiene attributes and `refused_commands`): a refused action
    (empty, a refused command) never reaches the env: the step is invalid, the state unchanged,
    and the observation is the adapter's `refused_text`.
    """

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.envs: dict[int, TextEnv] = {}
        self.kinds: dict[int, str] = {}  # slot -> the adapter name its env was made for (reused while it stays)
        self.last: dict[int, Observation] = {}

    def handle(self, op: str, slot: int, arg: Any) -> Any:
        if op == "reset":
            task, seed = arg
            env = self.envs.get(slot)
            if env is None or self.kinds.get(slot) != env_name_of(task):
                if env is not None:
                    self.envs.pop(slot)
                    self.kinds.pop(slot, None)
                    env.close()
                env = self.envs[slot] = make_env(task, self.options)
                self.kinds[slot] = env_name_of(task)
            obs = self.last[slot] = env.reset(task, seed=seed)
            return obs
        if op == "step":
            env = self.envs[slot]
            text, ok = env.clean_action(arg)
            if not ok:
                last = self.last[slot]
                obs = Observation(env.refused_text, last.admissible, last.goal, last.anchor, dict(last.info))
                return Transition(obs, 0.0, False, valid=False)
            tr = env.step(text)
            self.last[slot] = tr.observation
            return tr
        if op == "close":
            self.last.pop(slot, None)
            self.kinds.pop(slot, None)
            env = self.envs.pop(slot, None)
            if env is not None:
                env.close()
            return None
        raise ValueError(f"unknown op {op}")

    def close_all(self) -> None:
        for env in self.envs.values():
            try:
                env.close()
            except Exception:
                pass
        self.envs.clear()
        self.kinds.clear()


def _worker_main(conn: Connection, options: dict[str, Any] | None = None) -> None:
    # Ctrl-C reaches the whole process group: the parent turns it into a clean stop and
    # closes (or kills) its workers, so a worker ignores SIGINT instead of printing a
    # KeyboardInterrupt traceback of its own. It still ends when the parent goes (EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    envs = _Envs(options)
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            break
        if batch is None:
            break
        for rid, op, slot, arg in batch:
            try:
                conn.send((rid, True, envs.handle(op, slot, arg)))
            except Exception as e:  # an env error ends that episode, not the worker
                conn.send((rid, False, f"{type(e).__name__}: {e}"))
    envs.close_all()


class EnvPool:
    def __init__(
        self,
        workers: int = 4,
        step_timeout: float = 30.0,
        start_method: str = "spawn",
        env_options: dict[str, Any] | None = None,
    ):
        self.env_options = dict(env_options or {})
        self.n_workers = max(0, int(workers))
        self.step_timeout = float(step_timeout)
        self._ctx = mp.get_context(start_method)
        self._procs: list[Any] = [None] * self.n_workers
        self._conns: list[Connection | None] = [None] * self.n_workers
        self._slots: dict[int, _Slot] = {}
        self._local = _Envs(self.env_options) if self.n_workers == 0 else None
        self._rid = 0
        self.restarts = 0

    # -- public API ------------------------------------------------------------------------
    def reset(self, requests: list[tuple[int, str, int | None]]) -> list[Observation | EnvFailure]:
        """requests: (slot, task id, seed). Returns one Observation or EnvFailure per request."""
        for slot, task, seed in requests:
            self._slots[slot] = _Slot(task, seed)
        out = self._run([("reset", slot, (task, seed)) for slot, task, seed in requests])
        return forget_failed(self._slots, [r[0] for r in requests], out)

    def step(self, requests: list[tuple[int, str]]) -> list[Transition | EnvFailure]:
        """requests: (slot, action). Returns one Transition or EnvFailure per request."""
        out = self._run([("step", slot, action) for slot, action in requests])
        return forget_failed(self._slots, [r[0] for r in requests], out)

    def release(self, slot: int) -> None:
        """Forget a finished episode (its env stays cached in the worker for reuse)."""
        self._slots.pop(slot, None)

    def close(self) -> None:
        if self._local is not None:
            self._local.close_all()
        for _i, conn in enumerate(self._conns):
            if conn is not None:
                try:
                    conn.send(None)
                except Exception:
                    pass
        for i, p in enumerate(self._procs):
            if p is not None:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=5)
            self._procs[i] = self._conns[i] = None

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    def _run(self, requests: list[tuple[str, int, Any]]) -> list[Any]:
        if self._local is not None:
            out = []
            for op, slot, arg in requests:
                try:
                    out.append(self._local.handle(op, slot, arg))
                except Exception as e:
                    out.append(EnvFailure(f"{type(e).__name__}: {e}"))
            return out

        results: dict[int, Any] = {}
        index_of: dict[int, int] = {}
        per_worker: dict[int, list[tuple[int, str, int, Any]]] = {}
        for i, (op, slot, arg) in enumerate(requests):
            self._rid += 1
            index_of[self._rid] = i
            per_worker.setdefault(slot % self.n_workers, []).append((self._rid, op, slot, arg))
        self._dispatch(per_worker, results)
        return [results[rid] for rid in sorted(index_of, key=index_of.get)]

    def _ensure(self, w: int) -> Connection:
        p = self._procs[w]
        if p is None or not p.is_alive():
            parent, child = self._ctx.Pipe()
            p = self._ctx.Process(
                target=_worker_main, args=(child, self.env_options), daemon=True, name=f"agentrl-env-{w}"
            )
            p.start()
            child.close()
            self._procs[w], self._conns[w] = p, parent
        return self._conns[w]

    def _kill(self, w: int) -> None:
        p = self._procs[w]
        if p is not None:
            p.kill()
            p.join(timeout=5)
        if self._conns[w] is not None:
            self._conns[w].close()
        self._procs[w] = self._conns[w] = None
        self.restarts += 1

    def _deadline(self, reqs: list) -> float:
        factor = 4 if reqs and reqs[0][1] == "reset" else 1  # a reset may generate or load a game
        return time.monotonic() + self.step_timeout * factor

    def _dispatch(self, per_worker: dict[int, list], results: dict[int, Any]) -> None:
        pending: dict[int, list] = {}  # worker -> requests not yet answered, in order
        silent: set[int] = set()  # rebuild requests, whose results are not returned
        deadline: dict[int, float] = {}

        def send(w: int, batch: list) -> None:
            p = self._procs[w]
            if batch and p is not None and not p.is_alive() and not pending.get(w):
                # it died between batches (killed from outside): nothing of this batch ran there, so
                # no episode is to blame; rebuild the ones it hosted on the new worker first
                self._kill(w)
                rebuild = self._rebuild_requests(w, batch)
                silent.update(r[0] for r in rebuild)
                batch = rebuild + batch
            if batch:
                self._ensure(w).send(batch)
                pending.setdefault(w, []).extend(batch)
                deadline[w] = self._deadline(pending[w])

        for w, batch in per_worker.items():
            send(w, batch)

        while any(pending.values()):
            live = {self._conns[w]: w for w, reqs in pending.items() if reqs}
            timeout = max(0.0, min(deadline[w] for w in live.values()) - time.monotonic())
            failed: dict[int, str] = {}
            for conn in wait(list(live), timeout=timeout):
                w = live[conn]
                try:
                    rid, ok, payload = conn.recv()
                except (EOFError, OSError):
                    code = self._procs[w].exitcode if self._procs[w] is not None else None
                    failed[w] = f"env worker crashed (exit code {code})"
                    continue
                req = next(r for r in pending[w] if r[0] == rid)
                pending[w].remove(req)
                deadline[w] = self._deadline(pending[w])
                _, op, slot, arg = req
                if ok and op == "step" and slot in self._slots and rid not in silent:
                    self._slots[slot].actions.append(arg)  # the log a rebuild re-plays (kept whole)
                if rid in silent:
                    if not ok:  # a rebuild failed: that episode is lost
                        self._drop_slot(w, slot, pending, results, f"could not rebuild env: {payload}")
                    continue
                results[rid] = payload if ok else EnvFailure(payload)
            now = time.monotonic()
            for w in live.values():
                if pending.get(w) and w not in failed and now >= deadline[w]:
                    failed[w] = f"env step timed out after {self.step_timeout:g}s"
            for w, why in failed.items():
                self._recover(w, why, pending, results, silent, send)

    def _drop_slot(self, w: int, slot: int, pending, results, why: str) -> None:
        for r in pending.get(w, []):
            if r[2] == slot and r[0] not in results:
                results[r[0]] = EnvFailure(why)
        pending[w] = [r for r in pending.get(w, []) if r[2] != slot]
        self._slots.pop(slot, None)

    def _recover(self, w: int, why: str, pending, results, silent, send) -> None:
        """Kill worker w, fail the episode whose request was running, rebuild the others, resend the rest."""
        self._kill(w)
        reqs = pending.pop(w, [])
        if not reqs:
            return
        culprit = reqs[0][2]
        pending[w] = reqs
        self._drop_slot(w, culprit, pending, results, why)
        rest = [r for r in pending.pop(w, []) if r[0] not in silent]
        rebuild = self._rebuild_requests(w, rest)
        silent.update(r[0] for r in rebuild)
        send(w, rebuild + rest)

    def _rebuild_requests(self, w: int, rest: list) -> list:
        """Requests that rebuild, on a new worker w, every episode it hosted (reset, then its logged
        actions), except those `rest` resets anyway. Their results are not returned (silent)."""
        rebuild: list = []
        for slot, st in self._slots.items():
            if slot % self.n_workers != w:
                continue
            first = next((r for r in rest if r[2] == slot), None)
            if first is not None and first[1] == "reset":
                continue  # it is being reset anyway
            self._rid += 1
            rebuild.append((self._rid, "reset", slot, (st.task, st.seed)))
            for a in st.actions:
                self._rid += 1
                rebuild.append((self._rid, "step", slot, a))
        return rebuild
