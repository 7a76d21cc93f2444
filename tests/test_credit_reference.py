"""Known-answer cases computed by running the authors' own code (verl-agent for grpo,
rloo and gigpo; the IGPO authors' code for igpo reference), read from
`../shared/reference/credit_vectors.json` beside the project. Every case must pass
through the public API (`get_method(name, **params).advantages(episodes)`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentrl.credit import Episode, Step, get_method

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "credit_vectors.json"


def _load() -> dict:
    if not VECTORS.is_file():
        return {"cases": [], "tolerance": 0.0}
    return json.loads(VECTORS.read_text())


DATA = _load()
CASES = DATA["cases"]
pytestmark = pytest.mark.skipif(not CASES, reason=f"reference vectors not found at {VECTORS}")


def _episodes(case: dict) -> list[Episode]:
    return [
        Episode(
            group=e["group"],
            steps=[
                Step(float(s["reward"]), s.get("anchor", ""), bool(s.get("valid", True)), dict(s.get("signals", {})))
                for s in e["steps"]
            ],
            outcome=e.get("outcome"),
            signals=dict(e.get("signals", {})),
        )
        for e in case["episodes"]
    ]


def test_vector_file_has_all_cases():
    assert len(CASES) == 46


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_reference_case(case):
    tol = DATA["tolerance"]
    got = get_method(case["method"], **case["params"]).advantages(_episodes(case))
    want = case["expected"]
    assert [len(x) for x in got] == [len(x) for x in want]
    worst = max((abs(a - b) for ga, wa in zip(got, want) for a, b in zip(ga, wa)), default=0.0)
    assert worst <= tol, f"{case['name']}: max |diff| {worst:.3g} > {tol}"
