"""`agentrl.credit` is pure numpy: importing it and every built-in method leaves torch out."""

from __future__ import annotations

import subprocess
import sys

CODE = (
    "import agentrl.credit, sys; from agentrl.credit import get_method; "
    "[get_method(m) for m in ['grpo','rloo','gigpo','spa','oprl','igpo']]; "
    "assert 'torch' not in sys.modules"
)


def test_credit_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_providers_are_named_not_imported():
    code = (
        "import sys; from agentrl.credit.registry import _BUILTIN; "
        "assert {m for m, (_, p) in _BUILTIN.items() if p} == {'spa', 'oprl', 'igpo'}; "
        "import agentrl.signals; assert 'torch' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
