"""No file, request or local user takes the shared daemon down (see Note [Resource limits]
and Note [Local users] in docs/ARCHITECTURE.md). Each test runs against the real daemon."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from audiodecode import AudioDataLoader, Daemon, load
from audiodecode._daemon import connect
from audiodecode._errors import AudioDecodeError
from audiodecode._protocol import Downmix, LoadSpec, Quality, Request, Response
from conftest import Corpus, write_wav


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def rate_bombs(tmp: Path, rate: int) -> list[Path]:
    """WAV, AIFF and CAF files whose headers declare ``rate`` Hz."""
    base = tmp / "base.wav"
    write_wav(base, np.zeros(4000), 16000)
    wav = bytearray(base.read_bytes()[:268])
    wav[24:28] = struct.pack("<I", rate)
    out = [tmp / f"bomb{rate}.wav"]
    out[0].write_bytes(wav)
    for ext, codec in (("aiff", "pcm_s16be"), ("caf", "pcm_s16le")):
        src = tmp / f"base.{ext}"
        ffmpeg("-i", str(base), "-c:a", codec, str(src))
        data = bytearray(src.read_bytes()[:4096])
        if ext == "aiff":
            at = data.index(b"COMM") + 16  # tag, size, channels, frames, bits
            exponent = 16383 + rate.bit_length() - 1
            mantissa = rate << (64 - rate.bit_length())
            data[at : at + 10] = struct.pack(">HQ", exponent, mantissa)
        else:
            at = data.index(b"desc") + 12  # tag, 8-byte size
            data[at : at + 8] = struct.pack(">d", float(rate))
        path = tmp / f"bomb{rate}.{ext}"
        path.write_bytes(data)
        out.append(path)
    return out


def test_header_rate_bombs_are_skipped_in_a_loader_epoch(
    daemon: Daemon, corpus: Corpus, tmp_path: Path
) -> None:
    bombs = [p for rate in (2**32 - 1, 2**31 - 1, 1) for p in rate_bombs(tmp_path, rate)]
    files = [*corpus.clips[:6], *bombs]
    loader = AudioDataLoader(
        [str(p) for p in files], batch_size=4, max_seconds=1.0, shuffle=False, cache=False
    )
    seen = sum(len(b.paths) for b in loader)
    assert seen == 6
    assert sorted(p for p, _ in loader.skipped) == sorted(str(p) for p in bombs)
    for path, reason in loader.skipped:
        assert reason.startswith(path), reason
    assert daemon.status().daemon_pid > 0  # still answering


def raw_load(spec: LoadSpec) -> tuple[str, float]:
    """Sends ``spec`` as it is (no client-side checks); returns the outcome and seconds."""
    conn = connect()
    started = time.monotonic()
    try:
        conn.request(Request.Load(spec), Response.Loaded, timeout=30)
        outcome = "loaded"
    except AudioDecodeError as e:
        outcome = f"error: {e}"
    finally:
        conn.close()
    return outcome, time.monotonic() - started


def test_hostile_loads_are_answered_and_never_wedge_the_pool(
    daemon: Daemon, corpus: Corpus, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    good = str(corpus.clips[0])

    def spec(path: str = good, **kw: object) -> LoadSpec:
        fields: dict[str, object] = {
            "path": path,
            "sample_rate": None,
            "mono": True,
            "offset": 0.0,
            "duration": None,
            "quality": Quality.HQ,
            "strict": False,
            "downmix": Downmix.MEAN,
        }
        fields.update(kw)
        return LoadSpec(**fields)  # type: ignore[arg-type]

    hostile = {
        "duration 0": spec(duration=0.0),
        "duration 1e-9": spec(duration=1e-9),
        "fifo": spec(path=str(fifo)),
        "sr 1e9": spec(sample_rate=10**9),
        "device": spec(path="/dev/zero"),
    }
    workers = daemon.status().workers
    for _ in range(3 * workers):
        for what, s in hostile.items():
            outcome, seconds = raw_load(s)
            assert seconds < 2.0, f"{what}: {seconds:.2f} s"
            if what.startswith("duration"):
                assert outcome == "loaded", f"{what}: {outcome}"  # an empty slice
            else:
                assert outcome.startswith("error"), f"{what}: {outcome}"
                assert "not a regular file" in outcome or "sample rate" in outcome, outcome
    samples, rate = load(good)
    assert rate == 16000 and samples.size > 0
    assert daemon.status().workers == workers


def test_non_finite_float_samples_stay_in_range(daemon: Daemon, tmp_path: Path) -> None:
    values = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.25], dtype="<f4")
    data = np.resize(values, 16000).tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 3, 1, 16000, 64000, 4, 32)
    path = tmp_path / "nan.wav"
    path.write_bytes(header + b"data" + struct.pack("<I", len(data)) + data)
    # NaN silent, ±Inf ±1, garbage bounded at ±2^20, the rest kept (as FFmpeg, soundfile).
    samples, _ = load(path)
    m = 2.0**20
    np.testing.assert_array_equal(samples[:6], [0.0, 1.0, -1.0, m, -m, 0.25])
    resampled, _ = load(path, sr=8000)
    assert np.isfinite(resampled).all() and np.abs(resampled).max() <= 4 * m


def serve_at(binary: Path, socket: Path) -> subprocess.CompletedProcess[str]:
    """``audiodecode serve`` in the foreground on ``socket``: returns once it exits."""
    return subprocess.run(
        [str(binary), "serve", "--foreground", "--socket", str(socket)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_a_shared_socket_directory_is_refused_and_keeps_its_mode(
    binary: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    run = serve_at(binary, shared / "d.sock")
    assert run.returncode != 0
    assert str(shared) in run.stderr and "writable by group or others" in run.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777
    assert not (shared / "d.sock").exists()


def test_pre_created_shared_memory_names_do_not_block_streams(
    daemon: Daemon, corpus: Corpus
) -> None:
    # Another user could create the names a predictable scheme would use next.
    pid = daemon.status().daemon_pid
    planted = [Path(f"/dev/shm/audiodecode-{os.geteuid()}-{pid}-{n}") for n in range(1, 40)]
    for p in planted:
        p.write_bytes(b"")
    try:
        loader = AudioDataLoader([str(p) for p in corpus.clips[:4]], batch_size=2)
        assert sum(len(b.paths) for b in loader) == 4
    finally:
        for p in planted:
            p.unlink(missing_ok=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a second user's directory")
def test_a_socket_directory_of_another_user_is_refused(binary: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    tmp_path.chmod(0o755)
    run = serve_at(binary, theirs / "d.sock")
    assert run.returncode != 0 and "owned by uid 65534" in run.stderr
