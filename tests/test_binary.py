"""The client finds the daemon binary as docs/ARCHITECTURE.md says, and that binary works."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from audiodecode import BinaryNotFoundError, find_binary
from conftest import built_binary


def write_tone(path: Path, seconds: float = 0.5, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.25 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def test_env_var_wins_and_binary_runs(tmp_path: Path, monkeypatch) -> None:
    binary = built_binary()
    if not binary.exists():
        pytest.fail(f"build the daemon first: {binary} is missing")
    monkeypatch.setenv("AUDIODECODE_BIN", str(binary))
    assert find_binary() == binary
    clip = tmp_path / "tone.wav"
    write_tone(clip)
    out = subprocess.run(
        [str(find_binary()), "info", "--json", str(clip)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out)
    assert info["sample_rate"] == 16000
    assert info["frames"] == 8000


def test_bad_env_var_is_an_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AUDIODECODE_BIN", str(tmp_path / "nope"))
    with pytest.raises(BinaryNotFoundError, match="AUDIODECODE_BIN"):
        find_binary()


def test_falls_back_to_path(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "audiodecode"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("AUDIODECODE_BIN", raising=False)
    monkeypatch.setattr("sysconfig.get_path", lambda _name: str(tmp_path / "none"))
    monkeypatch.setattr("sys.executable", str(tmp_path / "none" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + "/usr/bin")
    assert find_binary() == fake


def test_nothing_found_lists_places(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AUDIODECODE_BIN", raising=False)
    monkeypatch.setattr("sysconfig.get_path", lambda _name: str(tmp_path / "none"))
    monkeypatch.setattr("sys.executable", str(tmp_path / "none" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BinaryNotFoundError, match="looked in"):
        find_binary()


def test_status_json_is_the_report_with_budget_gpus_and_failures(binary: Path) -> None:
    from audiodecode import Daemon

    with Daemon(workers=1, ring_bytes=96 << 20) as d:
        out = subprocess.run(
            [str(binary), "status", "--json", "--socket", str(d.socket_path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    report = json.loads(out)
    assert report["ring_budget_bytes"] == 96 << 20  # shown with no stream open
    assert isinstance(report["gpus"], list)
    assert report["failed_jobs"] == 0 and report["abandoned_jobs"] == 0
    assert report["workers"] == 1 and report["streams"] == []
