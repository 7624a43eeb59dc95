"""The type checker passes on the product and the simulator (mypy.ini; .ci/run runs it too).

Why a test as well as the CI step: a contributor who runs only ``python -m pytest`` still learns
that a change broke a seam's types (a collaborator passed where its Protocol does not fit, a
``None`` where a value is required). It takes a few seconds: mypy runs once, in a subprocess,
with a cache of its own so that it never races another run over ``.mypy_cache``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_no_type_error(tmp_path: Path):
    completed = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Success: no issues found" in completed.stdout
