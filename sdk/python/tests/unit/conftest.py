from __future__ import annotations

import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import fake_bangerd
import fakes
import pytest


@pytest.fixture
def fake() -> fakes.FakeDaemon:
    return fakes.FakeDaemon()


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for Unix sockets (their paths are limited to 108 bytes)."""
    d = tempfile.mkdtemp(prefix="banger-sdk.", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake_banger(sockdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """A fake `banger` CLI first on PATH whose `daemon start` starts a fake daemon;
    `log` collects the arguments it ran with. The daemon is killed afterwards."""
    bin_dir = sockdir / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "banger"
    exe.write_text(fake_bangerd.FAKE_BANGER)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    paths = {"exe": exe, "log": sockdir / "banger.log", "pid": sockdir / "bangerd.pid"}
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_BANGER_LOG", str(paths["log"]))
    monkeypatch.setenv("FAKE_BANGER_PID", str(paths["pid"]))
    monkeypatch.setenv("FAKE_PYTHON", sys.executable)
    monkeypatch.setenv("FAKE_BANGERD", fake_bangerd.__file__)
    monkeypatch.delenv("BANGER_BIN", raising=False)
    yield paths
    if paths["pid"].exists():
        os.kill(int(paths["pid"].read_text()), signal.SIGTERM)
