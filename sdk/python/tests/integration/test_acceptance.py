"""`pip install ./sdk/python` into a fresh venv, then acceptance.py with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[2]


def test_a_new_user_installs_the_sdk_and_runs_the_acceptance_script(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", str(SDK)], check=True)

    done = subprocess.run(
        [str(venv / "bin/python"), str(Path(__file__).parent / "acceptance.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.stdout.strip().endswith("acceptance: ok")
