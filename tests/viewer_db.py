"""A small runs database for the viewer tests, written through the real Store API.

Also a writer for the browser test's "reads while a run writes" check:

    python tests/viewer_db.py write DB RUN_ID N [SLEEP_S]

appends N episodes to run RUN_ID, one transaction each (as a training run does). And
`running_viewer(db)`: `agentrl view` as a real server in a subprocess, for the browser test and the
viewer benchmarks.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

if __name__ == "__main__":  # run as a script: the checkout's agentrl
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentrl.store import EpisodeRecord, StepRecord, open_store  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# headless Chromium as the browser tests and the screenshots drive it (Debian's chromium, through playwright)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

XSS_OBS = "<script>alert(1)</script> [/bold] & [red]not markup[/]"
XSS_ACTION = '"><img src=x onerror=alert(2)>'
XSS_RUN = "<i>evil</i> [bold]run"
XSS_GROUP = "it9/x/../<b>g</b>?a=1&b=%41#frag"

ROOMS = ["-= Kitchen =-\nA stove.", "-= Hall =-\nA lantern hangs here.", "-= Garden =-\nA gate, 100% closed."]


def _steps(n: int, won: bool, rooms=ROOMS, action_prefix="go") -> list[StepRecord]:
    out = []
    for t in range(n):
        room = rooms[t % len(rooms)]
        out.append(
            StepRecord(
                t=t,
                observation=f"{room}\nStep {t}.",
                action=f"{action_prefix} {'north' if t % 2 else 'south'}",
                reward=1.0 if (won and t == n - 1) else 0.0,
                terminated=won and t == n - 1,
                anchor=room,
                admissible=["go north", "go south", "look"],
                raw=f"I will go {'north' if t % 2 else 'south'}",
                action_ids=[5, 6],
                logprobs=[-0.1, -0.2],
            )
        )
    return out


def episode(
    task: str, group: str, won: bool, length: int, split="train", iteration=1, status="ok", **kw
) -> EpisodeRecord:
    return EpisodeRecord(
        task_id=task,
        group_id=group,
        env="toy",
        split=split,
        iteration=iteration,
        seed=7,
        policy="llm:tiny",
        status=status,
        won=won,
        ret=1.0 if won else 0.0,
        goal="Find the lantern.",
        final_observation="The end.",
        error="env worker died" if status == "error" else None,
        steps=kw.pop("steps", None) or _steps(length, won),
        **kw,
    )


def build(path: Path) -> dict:
    """Two runs: a train run (evals at 0 and 2, two training iterations of two groups of three,
    advantages of gigpo and spa with signals, a checkpoint, an errored episode, an episode with
    hostile text) and an eval run. Returns the ids the tests use."""
    store = open_store(path)
    ids: dict = {}
    recipe = "name: alpha\nseed: 0\nenv: {suite: toy-pick}\ncredit: {method: gigpo}\n"
    run = store.create_run("alpha", recipe, kind="train")
    ids["run"] = run
    for i in range(4):
        store.write_episode(
            episode(f"toy/pick/seed-{100 + i}", f"eval/it0/{i}", i == 0, 3, split="eval", iteration=0), run
        )
    store.add_iteration(run, 0, {"eval_success": 0.25, "eval_return": 0.25, "eval_episodes": 4}, {"eval": 1.0})
    ids["train"] = []
    for it in (1, 2):
        recs = []
        for g in range(2):
            for k in range(3):
                won = k == 0 or (it == 2 and k == 1)
                rec = episode(
                    f"toy/pick/seed-{g}", f"it{it}/{g}/toy/pick/seed-{g}", won, 2 + k, iteration=it, info={"sample": k}
                )
                store.write_episode(rec, run)
                recs.append(rec)
                ids["train"].append(rec.id)
        for method in ("gigpo", "spa"):
            rows = []
            for rec in recs:
                for st in rec.steps:
                    sig = {"progress": 0.1 * st.t} if method == "spa" else {}
                    rows.append((st.id, (1.0 if rec.won else -0.5) + 0.01 * st.t, sig))
            store.write_advantages(method, rows)
        store.add_iteration(
            run,
            it,
            {
                "success": sum(r.won for r in recs) / len(recs),
                "return": 0.5,
                "length": 3.0,
                "episodes": len(recs),
                "loss": 0.3 / it,
                "approx_kl": 0.01 * it,
                "clip_frac": 0.02,
                "entropy": 0.5,
                "grad_norm": 0.7,
                **({"eval_success": 0.5, "eval_return": 0.5, "eval_episodes": 4} if it == 2 else {}),
            },
            {"rollout": 2.0 * it, "update": 3.0, "total": 5.0 + it},
        )
    ids["first_group"] = "it1/0/toy/pick/seed-0"
    for i in range(4):
        store.write_episode(
            episode(f"toy/pick/seed-{100 + i}", f"eval/it2/{i}", i < 2, 3, split="eval", iteration=2), run
        )
    err = episode("toy/pick/seed-9", "it2/err/toy/pick/seed-9", False, 1, iteration=2, status="error")
    ids["error"] = store.write_episode(err, run)
    xss_steps = _steps(2, False)
    xss_steps[0].observation = XSS_OBS
    xss_steps[0].action = XSS_ACTION
    xss_steps[0].anchor = XSS_OBS
    xss_steps[1].anchor = XSS_OBS
    xss = episode("toy/<script>alert(3)</script>", XSS_GROUP, False, 2, iteration=2, steps=xss_steps)
    ids["xss"] = store.write_episode(xss, run)
    ids["xss_group"] = XSS_GROUP
    store.add_checkpoint(run, 2, str(path.parent / "runs" / "alpha-1" / "iter-0002"), {"success": 0.5})
    store.set_run_status(run, "finished")
    ev = store.create_run(XSS_RUN, "name: evil\npolicy: random\nenv: {suite: toy-pick}\n", kind="eval")
    ids["eval_run"] = ev
    for i in range(2):
        store.write_episode(
            episode(f"toy/pick/seed-{100 + i}", f"eval/it0/{i}", i == 0, 2, split="eval", iteration=0), ev
        )
    store.add_iteration(ev, 0, {"eval": {"success": 0.5, "mean_return": 0.5, "episodes": 2}}, {})
    store.set_run_status(ev, "finished")
    store.close()
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_viewer(db: str | Path, timeout: float = 60) -> Iterator[str]:
    """`agentrl view --db DB` on a free port in a subprocess; yields its base URL once `/` answers 200,
    stops it on exit. Raises RuntimeError (with the server's output) if it exits or does not answer."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentrl.cli", "view", "--db", str(db), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"agentrl view exited {proc.returncode}: {proc.stdout.read()}")
            try:
                with urllib.request.urlopen(base + "/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"agentrl view did not answer at {base}/ within {timeout} s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_loop(path: str, run_id: int, n: int, sleep_s: float = 0.05) -> None:
    store = open_store(path, create=False)
    for i in range(n):
        store.write_episode(episode(f"toy/pick/seed-{500 + i}", f"it3/live/{i}", i % 2 == 0, 3, iteration=3), run_id)
        time.sleep(sleep_s)
    store.close()


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "write":
        write_loop(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) > 5 else 0.05)
    else:
        raise SystemExit(__doc__)
