"""The env pool on Ray actors (ARCHITECTURE.md §3, §10): `EnvPool`'s contract, on a cluster.

`RayEnvPool(actors)` starts `actors` env actors (`max_concurrency=1`; `scheduling_strategy="SPREAD"`
unless `spread=False`, so they land on every node). Each hosts several envs, with the very logic of
the local pool's workers (`agentrl.envs.pool._Envs`, action hygiene included); slot k is hosted by
actor k % actors. A batch of requests is split per actor and each request is ONE remote call: an
actor runs one call at a time, in order, so the call at the head of an actor's queue is the one
running and a hang or a crash is attributed to it. Results come back in request order.

What fails, and what goes on:

- An exception inside an env (or a result Ray cannot send back) -> `EnvFailure("<Type>: <msg>")`
  for that request only; the actor and its other episodes are untouched.
- A request still running `step_timeout` seconds after it started (x4 for a reset, as in
  `EnvPool`) -> `EnvFailure("env step timed out after Ns")`; the actor is killed (`ray.kill`) and
  replaced.
- A dead actor (its process crashed or was killed, its node or raylet died: any
  `RayActorError`) -> the request that was running on it, i.e. the first one it had not answered,
  gets `EnvFailure("env actor died: <reason> (node <ip>)")`; the actor is replaced (a new one,
  possibly on another node). Only that one request: the calls queued behind it had not started,
  so their episodes are intact. This holds whenever the actor died, so an actor killed while idle
  (between two batches) costs the first episode of the next batch that reaches it; Ray cannot
  tell "died while running this call" from "was already dead", and blaming the first call is what
  stops an env that kills its host on every step from killing replacements forever.
- After a replacement, every other episode the old actor hosted (those in this batch and those
  not) is rebuilt on the new actor by replaying its reset and its logged actions (envs are
  deterministic given task id and seed), and the unanswered requests are sent again: those
  episodes go on as if nothing happened. The log is only of answered steps and is kept whole, so
  a second failure during a rebuild replays it again from the start. A rebuild that fails (an
  error, a timeout or a death during the replay) ends that episode: `EnvFailure("could not
  rebuild env: ...")` now if it has a request in this batch, else on its next step.
- An actor that died before it started (e.g. it was placed on a node that was dying: Ray may
  still place actors there until it has noticed) is created again with the same requests: nothing
  ran on it. After `START_TRIES` such deaths in a row, or when it is not placed within
  `start_timeout`, the requests sent to it fail with `EnvFailure("env actor did not start: ...")`
  (their episodes end) and the actor is replaced for the next batch.
- No Ray exception escapes `reset`/`step`: anything unexpected (Ray shut down under the pool)
  fails the unanswered requests with `EnvFailure("env pool error: ...")`; the actors they went to
  are replaced and the other episodes those hosted end ("could not rebuild env: ..." next step).

`restarts` counts actors replaced. `placement(slot)` is the node IP of the actor hosting `slot`
(after a replacement, the replaced actor's until the new one has started).
Ray must already be initialised (`agentrl.runtime.cluster.connect`); this module is only imported
when the ray backend is chosen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agentrl.envs.base import Observation, Transition
from agentrl.envs.pool import EnvFailure, _Envs, _Slot, forget_failed

_MISSING = object()  # a result slot not filled yet
START_TRIES = 3  # creations of one actor in a row that may die before it starts


class _EnvHost:
    """The body of one env actor: the local pool's `_Envs`, behind remote calls."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.envs = _Envs(options)

    def node_ip(self) -> str:
        import ray

        return ray.util.get_node_ip_address()

    def handle(self, op: str, slot: int, arg: Any) -> tuple[bool, Any]:
        try:
            return True, self.envs.handle(op, slot, arg)
        except Exception as e:  # an env error ends that episode, not the actor
            return False, f"{type(e).__name__}: {e}"

    def close_all(self) -> None:
        self.envs.close_all()


_ACTOR_CLASS = None


def _actor_class():
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        import ray

        _ACTOR_CLASS = ray.remote(max_concurrency=1)(_EnvHost)
    return _ACTOR_CLASS


@dataclass
class _Req:
    op: str
    slot: int
    arg: Any
    index: int | None  # position in the caller's batch; None: a rebuild request, its result not returned
    ref: Any = None
    dropped: bool = False  # its episode ended meanwhile: the result is ignored (the call still runs)


def _never_ran(e: BaseException) -> bool:
    """Whether Ray says the actor never ran a task (cancelled before it started, unschedulable), as
    opposed to a process that started, ran requests and then died (an os._exit in an env loses the
    replies it had not sent yet, its first answer included)."""
    text = str(e)
    return "never ran" in text or "before it started" in text or type(e).__name__ == "ActorUnschedulableError"


def _death_reason(e: BaseException) -> tuple[str, str | None]:
    """A short reason and the node IP (if Ray says) from a Ray error about a dead actor."""
    ip = None
    reason = ""
    for line in str(e).splitlines():
        s = line.strip()
        if line.startswith("\t") and s.startswith("ip: "):
            ip = s[4:].strip() or None
        elif s and not reason and not line.startswith("\t") and "died unexpectedly before finishing" not in s:
            reason = s
    reason = reason.split(" Some common causes", 1)[0]
    if len(reason) > 300:
        reason = reason[:297] + "..."
    return reason or type(e).__name__, ip


class RayEnvPool:
    def __init__(
        self,
        actors: int,
        step_timeout: float = 30.0,
        resources: dict[str, float] | None = None,
        spread: bool = True,
        start_timeout: float | None = None,
        env_options: dict[str, Any] | None = None,
    ):
        import ray

        if not ray.is_initialized():
            raise RuntimeError("RayEnvPool needs Ray initialised first (ray.init or agentrl.runtime.cluster.connect)")
        self.env_options = dict(env_options or {})  # passed to every adapter the actors make
        self.n_actors = max(1, int(actors))
        self.step_timeout = float(step_timeout)
        # creating a worker and importing the envs is not a step; on a cluster an actor may wait for a node
        self.start_timeout = float(start_timeout) if start_timeout is not None else max(120.0, 4 * self.step_timeout)
        res = {k: float(v) for k, v in (resources or {}).items()}
        opts: dict[str, Any] = {"num_cpus": res.pop("CPU", 0.5)}
        if "GPU" in res:
            opts["num_gpus"] = res.pop("GPU")
        if "memory" in res:
            opts["memory"] = res.pop("memory")
        if res:
            opts["resources"] = res
        opts["scheduling_strategy"] = "SPREAD" if spread else "DEFAULT"
        self._options = opts
        n = self.n_actors
        self._actors: list[Any] = [None] * n
        self._ready: list[Any] = [None] * n  # the node_ip call each actor runs first
        self._ips: list[str | None] = [None] * n
        self._started = [False] * n
        self._created = [0.0] * n
        self._start_tries = [0] * n  # deaths before starting, in a row
        self._slots: dict[int, _Slot] = {}
        self._broken: dict[int, str] = {}  # slot -> why its rebuild failed (told on its next request)
        self.restarts = 0
        for a in range(n):  # all at once: they start in parallel
            self._spawn(a)

    # -- public API ------------------------------------------------------------------------
    def reset(self, requests: list[tuple[int, str, int | None]]) -> list[Observation | EnvFailure]:
        """requests: (slot, task id, seed). Returns one Observation or EnvFailure per request."""
        for slot, task, seed in requests:
            self._slots[slot] = _Slot(task, seed)
            self._broken.pop(slot, None)
        out = self._run([("reset", slot, (task, seed)) for slot, task, seed in requests])
        return forget_failed(self._slots, [r[0] for r in requests], out)

    def step(self, requests: list[tuple[int, str]]) -> list[Transition | EnvFailure]:
        """requests: (slot, action). Returns one Transition or EnvFailure per request."""
        out = self._run([("step", slot, action) for slot, action in requests])
        return forget_failed(self._slots, [r[0] for r in requests], out)

    def release(self, slot: int) -> None:
        """Forget a finished episode (its env stays cached in the actor for reuse)."""
        self._slots.pop(slot, None)
        self._broken.pop(slot, None)

    def placement(self, slot: int) -> str | None:
        """The IP of the node of the actor hosting `slot` (for the store: which node served an episode).

        Right after a replacement it is the replaced actor's node until the new actor has started (an
        episode that failed there was served there); it waits (10 s at most) only when no node is known
        yet, and is None when none is.
        """
        a = slot % self.n_actors
        if not self._started[a] and self._ready[a] is not None:
            try:
                import ray

                wait_s = 0.0 if self._ips[a] is not None else min(10.0, self.start_timeout)
                if ray.wait([self._ready[a]], timeout=wait_s)[0]:
                    self._ips[a] = ray.get(self._ready[a])
                    self._started[a], self._start_tries[a] = True, 0
            except Exception:
                pass
        return self._ips[a]

    def close(self) -> None:
        """Close the envs (briefly) and kill the actors."""
        actors = [h for h in self._actors if h is not None]
        n = self.n_actors
        self._actors, self._ready, self._ips, self._started = [None] * n, [None] * n, [None] * n, [False] * n
        if not actors:
            return
        try:
            import ray

            if not ray.is_initialized():
                return
            refs = [h.close_all.remote() for h in actors]
            ray.wait(refs, num_returns=len(refs), timeout=2.0)
            for h in actors:
                ray.kill(h, no_restart=True)
        except Exception:
            pass

    def __enter__(self) -> RayEnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- actors ----------------------------------------------------------------------------
    def _spawn(self, a: int) -> None:
        handle = _actor_class().options(**self._options).remote(self.env_options)
        self._actors[a] = handle
        self._ready[a] = handle.node_ip.remote()
        self._started[a] = False  # _ips[a] stays the replaced actor's until this one starts
        self._created[a] = time.monotonic()

    def _replace(self, a: int) -> None:
        old = self._actors[a]
        self._actors[a] = self._ready[a] = None
        if old is not None:
            try:
                import ray

                ray.kill(old, no_restart=True)
            except Exception:
                pass
        self.restarts += 1
        self._spawn(a)

    # -- internals -------------------------------------------------------------------------
    def _run(self, requests: list[tuple[str, int, Any]]) -> list[Any]:
        results: list[Any] = [_MISSING] * len(requests)
        queues: dict[int, list[_Req]] = {}
        for i, (op, slot, arg) in enumerate(requests):
            if op == "step" and slot in self._broken:
                results[i] = EnvFailure(self._broken.pop(slot))
                continue
            queues.setdefault(slot % self.n_actors, []).append(_Req(op, slot, arg, i))
        try:
            self._dispatch(queues, results)
        except Exception as e:  # Ray itself failed (shut down, lost its GCS): no Ray error escapes
            self._abandon(f"env pool error: {type(e).__name__}: {e}", results, list(queues))
        return results

    def _abandon(self, why: str, results: list[Any], actors: list[int]) -> None:
        for i, res in enumerate(results):
            if res is _MISSING:
                results[i] = EnvFailure(why)
        for a in actors:  # their queues are in an unknown state: start over, the episodes they hosted end
            for slot in [s for s in self._slots if s % self.n_actors == a]:
                self._broken[slot] = f"could not rebuild env: {why}"
                self._slots.pop(slot)
            try:
                self._replace(a)
            except Exception:
                self._actors[a] = self._ready[a] = None

    def _submit(self, a: int, reqs: list[_Req], pending: dict[int, list[_Req]], since: dict[int, float]) -> None:
        if self._actors[a] is None:
            self._spawn(a)
        handle = self._actors[a]
        for r in reqs:
            r.ref = handle.handle.remote(r.op, r.slot, r.arg)
        q = pending.setdefault(a, [])
        if not q:
            since[a] = time.monotonic()
        q.extend(reqs)

    def _deadline(self, a: int, q: list[_Req], since: dict[int, float]) -> float:
        if not self._started[a]:
            return self._created[a] + self.start_timeout
        factor = 4 if q[0].op == "reset" else 1  # a reset may generate or load a game
        return since[a] + self.step_timeout * factor

    def _dispatch(self, queues: dict[int, list[_Req]], results: list[Any]) -> None:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        pending: dict[int, list[_Req]] = {}  # actor -> its requests not yet answered, in order
        since: dict[int, float] = {}  # actor -> when its head request started (as far as we know)
        for a, reqs in queues.items():
            self._submit(a, reqs, pending, since)

        while any(pending.values()):
            refs: list[Any] = []
            for a, q in pending.items():
                if q:
                    if not self._started[a]:
                        refs.append(self._ready[a])
                    refs.extend(r.ref for r in q)
            wait_s = min(self._deadline(a, q, since) for a, q in pending.items() if q) - time.monotonic()
            ray.wait(refs, num_returns=1, timeout=max(0.0, wait_s))
            ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])

            failed: dict[int, tuple[str, str]] = {}  # actor -> (kind, why)
            for a, q in pending.items():
                if not q:
                    continue
                if not self._started[a]:
                    if self._ready[a] not in ready:
                        continue
                    try:
                        self._ips[a] = ray.get(self._ready[a])
                    except Exception as e:
                        if _never_ran(e):  # e.g. placed on a node that was dying: nothing ran there
                            failed[a] = ("lost", f"env actor did not start: {_death_reason(e)[0]}")
                        else:  # it ran, then its process died before its first answer reached us
                            failed[a] = ("died", self._died(a, e))
                        continue
                    self._started[a] = True
                    self._start_tries[a] = 0
                    since[a] = time.monotonic()
                while q and q[0].ref in ready:
                    r = q[0]
                    try:
                        ok, payload = ray.get(r.ref)
                    except RayActorError as e:
                        failed[a] = ("died", self._died(a, e))
                        break
                    except RayTaskError as e:  # raised outside the env's code, e.g. an unpicklable result
                        cause = getattr(e, "cause", None) or e
                        ok, payload = False, f"{type(cause).__name__}: {cause}"
                    except Exception as e:  # the node, its raylet or the object is gone
                        failed[a] = ("died", self._died(a, e))
                        break
                    q.pop(0)
                    since[a] = time.monotonic()
                    self._take(r, ok, payload, q, results)

            now = time.monotonic()
            for a, q in pending.items():
                if q and a not in failed and now >= self._deadline(a, q, since):
                    if self._started[a]:
                        failed[a] = ("timeout", f"env step timed out after {self.step_timeout:g}s")
                    else:
                        failed[a] = ("start", f"env actor did not start within {self.start_timeout:g}s")
            for a, (kind, why) in failed.items():
                self._recover(a, kind, why, pending, since, results)

    def _died(self, a: int, e: BaseException) -> str:
        reason, ip = _death_reason(e)
        ip = ip or self._ips[a]
        return f"env actor died: {reason}" + (f" (node {ip})" if ip else "")

    def _take(self, r: _Req, ok: bool, payload: Any, q: list[_Req], results: list[Any]) -> None:
        if r.dropped:
            return
        if r.index is None:  # a rebuild request
            if not ok:
                self._drop(r.slot, q, results, f"could not rebuild env: {payload}")
            return
        if ok and r.op == "step" and r.slot in self._slots:
            self._slots[r.slot].actions.append(r.arg)  # the log a rebuild replays
        results[r.index] = payload if ok else EnvFailure(payload)

    def _drop(self, slot: int, q: list[_Req], results: list[Any], why: str) -> None:
        """End episode `slot`: its unanswered requests fail with `why` (or its next one, if none is here)."""
        told = False
        for r in q:
            if r.slot == slot and not r.dropped:
                r.dropped = True
                if r.index is not None and results[r.index] is _MISSING:
                    results[r.index] = EnvFailure(why)
                    told = True
        if not told:
            self._broken[slot] = why
        self._slots.pop(slot, None)

    def _recover(self, a: int, kind: str, why: str, pending, since, results: list[Any]) -> None:
        """Replace actor a; fail the request that was running; rebuild the other episodes; resend the rest."""
        q = pending.pop(a, [])
        self._replace(a)
        if kind == "lost":  # died before it started: nothing ran there, try a new one with the same requests
            self._start_tries[a] += 1
            if self._start_tries[a] < START_TRIES:
                again = [_Req(r.op, r.slot, r.arg, r.index) for r in q if not r.dropped]
                if again:
                    self._submit(a, again, pending, since)
                return
            self._start_tries[a] = 0
            kind = "start"
        if kind == "start":  # nothing ran there, so no request to blame, and a replacement may not start either
            for r in q:
                if not r.dropped:
                    self._drop(r.slot, q, results, why if r.index is not None else f"could not rebuild env: {why}")
            for slot in [s for s in self._slots if s % self.n_actors == a]:
                self._drop(slot, [], results, f"could not rebuild env: {why}")
            return
        if q and not q[0].dropped:
            head = q[0]
            self._drop(head.slot, q, results, why if head.index is not None else f"could not rebuild env: {why}")
        rest = [_Req(r.op, r.slot, r.arg, r.index) for r in q if not r.dropped and r.index is not None]
        first_op = {}
        for r in rest:
            first_op.setdefault(r.slot, r.op)
        rebuild: list[_Req] = []
        for slot, st in self._slots.items():
            if slot % self.n_actors != a or first_op.get(slot) == "reset":
                continue  # another actor's, or being reset anyway
            rebuild.append(_Req("reset", slot, (st.task, st.seed), None))
            rebuild.extend(_Req("step", slot, action, None) for action in st.actions)
        if rebuild or rest:
            self._submit(a, rebuild + rest, pending, since)
