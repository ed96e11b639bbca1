"""The README's first command: examples/demo.py runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys

from support import PYTHONPATH, ROOT


def test_demo_restores_on_a_fresh_clone(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    clone_part = proc.stdout.split("Machine B")[1]
    assert "restored  data_prep/prepare" in clone_part
    assert "restored  analysis/analyze" in clone_part
    assert "identical to A: True" in proc.stdout
