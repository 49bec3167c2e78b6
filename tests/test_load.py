"""``audiodecode.load`` through a real daemon, and the daemon's lifecycle around it."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from audiodecode import (
    AudioDataLoader,
    AudioFileError,
    AudioFileNotFoundError,
    Daemon,
    DamagedAudioWarning,
    ErrorKind,
    _daemon,
    load,
)
from audiodecode._protocol import Request, Response
from conftest import Corpus, read_wav


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


def test_wav_is_exact(daemon: Daemon, corpus: Corpus) -> None:
    y, sr = load(corpus.clips[3])
    ref, ref_sr = read_wav(corpus.clips[3])
    assert sr == ref_sr == 16000
    assert y.dtype == np.float32 and y.shape == ref[0].shape
    np.testing.assert_array_equal(y, ref[0])
    assert y.flags.writeable


def test_channels_and_dtype(daemon: Daemon, corpus: Corpus) -> None:
    ref, _ = read_wav(corpus.stereo)
    planes, sr = load(corpus.stereo, mono=False)
    assert sr == 48000 and planes.shape == ref.shape == (2, 48000)
    np.testing.assert_array_equal(planes, ref)
    mono, _ = load(corpus.stereo, dtype=np.float64)
    assert mono.dtype == np.float64 and mono.shape == (48000,)
    np.testing.assert_allclose(mono, ref.mean(axis=0), atol=1e-6)
    # librosa convention: a single-channel file is [T] even with mono=False.
    assert load(corpus.clips[0], mono=False)[0].ndim == 1


def test_resampling_keeps_pitch(daemon: Daemon, corpus: Corpus) -> None:
    y, sr = load(corpus.resampled[1], sr=16000)  # 0.9 s of 600 Hz at 44.1 kHz
    assert sr == 16000
    assert abs(len(y) - round(0.9 * 16000)) <= 1
    assert abs(peak_hz(y, sr) - 600) < 5
    fast, _ = load(corpus.resampled[1], sr=16000, quality="fast")
    assert fast.shape == y.shape


def test_offset_and_duration_slice(daemon: Daemon, corpus: Corpus) -> None:
    full, sr = load(corpus.clips[5])
    part, _ = load(corpus.clips[5], offset=0.25, duration=0.3)
    start = round(0.25 * sr)
    np.testing.assert_array_equal(part, full[start : start + round(0.3 * sr)])


def test_encoded_formats(daemon: Daemon, corpus: Corpus) -> None:
    ref, _ = read_wav(corpus.source)
    flac, sr = load(corpus.encoded["flac"])
    assert sr == 44100
    np.testing.assert_array_equal(flac, ref[0])
    for ext in ("mp3", "ogg"):
        y, sr = load(corpus.encoded[ext])
        assert sr == 44100
        # Lossy, but gapless: same length and waveform within coding noise.
        assert len(y) == len(ref[0]), ext
        assert np.corrcoef(y, ref[0])[0, 1] > 0.99, ext


def test_errors_name_the_file(daemon: Daemon, corpus: Corpus, tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioFileNotFoundError, match="missing.wav") as e:
        load(missing)
    assert e.value.path == str(missing) and e.value.kind == ErrorKind.NOT_FOUND
    with pytest.raises(AudioFileError, match="garbage.wav") as e2:
        load(corpus.garbage)
    assert e2.value.kind == ErrorKind.UNSUPPORTED
    with pytest.raises(AudioFileError, match="truncated") as e3:
        load(corpus.truncated, strict=True)
    assert e3.value.kind == ErrorKind.TRUNCATED and e3.value.path == str(corpus.truncated)
    with pytest.raises(AudioFileError) as e4:
        load(corpus.clips[0], offset=100.0)
    assert e4.value.kind == ErrorKind.OFFSET_PAST_END


def test_damaged_files_give_what_decodes_with_a_warning(daemon: Daemon, corpus: Corpus) -> None:
    with pytest.warns(DamagedAudioWarning, match="truncated") as caught:
        y, sr = load(corpus.truncated)
    warning = caught[0].message
    assert isinstance(warning, DamagedAudioWarning)
    assert warning.path == str(corpus.truncated) and "truncated.wav" in warning.damage
    # The first half of the file survived the cut: it is there, sample for sample.
    whole, whole_sr = read_wav(corpus.clips[-1])  # truncated.wav is its first half
    assert sr == whole_sr and 0 < len(y) < whole.shape[1]
    np.testing.assert_array_equal(y, whole[0][: len(y)])


def test_relative_paths_are_the_callers(
    daemon: Daemon, corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(corpus.clips[0].parent)
    y, _ = load(corpus.clips[0].name)
    np.testing.assert_array_equal(y, read_wav(corpus.clips[0])[0][0])


def test_bad_quality_is_rejected_locally(daemon: Daemon, corpus: Corpus) -> None:
    with pytest.raises(ValueError, match="quality"):
        load(corpus.clips[0], quality="best")


def test_per_user_daemon_starts_on_demand_once(
    binary: Path, corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients racing to start the per-user daemon all end up on the same one."""
    sock = tmp_path / "user" / "daemon.sock"
    monkeypatch.setenv("AUDIODECODE_SOCKET", str(sock))
    pids: list[int] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with _daemon.connect() as conn:
                pids.append(conn.daemon_pid)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert not errors, errors
        assert len(pids) == 4 and len(set(pids)) == 1
        y, _ = load(corpus.clips[0])  # load() finds the same daemon
        assert len(y) == round(0.3 * 16000)
        assert (sock.parent / "daemon.log").exists()
        assert oct(sock.parent.stat().st_mode & 0o777) == "0o700"
    finally:
        stop_user_daemon(sock)


def stop_user_daemon(sock: Path) -> None:
    with _daemon.connect() as conn:
        conn.request(Request.Shutdown(), Response.Ok)
    # It removes its socket on the way out.
    for _ in range(100):
        if not sock.exists():
            break
        time.sleep(0.05)
    assert not sock.exists()


def test_load_reconnects_after_the_daemon_restarts(
    binary: Path, corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = tmp_path / "user" / "daemon.sock"
    monkeypatch.setenv("AUDIODECODE_SOCKET", str(sock))
    try:
        first, _ = load(corpus.clips[0])
        stop_user_daemon(sock)
        # The cached connection is dead; load() starts a new daemon and retries.
        again, _ = load(corpus.clips[0])
        np.testing.assert_array_equal(first, again)
    finally:
        stop_user_daemon(sock)


def test_private_daemon_context(binary: Path, corpus: Corpus) -> None:
    with Daemon(workers=1) as d:
        assert d.status().daemon_pid == d.pid
        assert _daemon.active_daemon() is d
        load(corpus.clips[0])
        proc = d.process
    assert _daemon.active_daemon() is None
    assert proc is not None and proc.poll() == 0  # shut down cleanly
    assert not os.path.exists(d.socket_path)


def test_itu_downmix_weights_the_centre_over_the_lfe(daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "five-one.wav"
    signal = (
        "aevalsrc=exprs=0.5*sin(2*PI*220*t)|0.4*sin(2*PI*330*t)|0.6*sin(2*PI*440*t)"
        "|0.3*sin(2*PI*50*t)|0.2*sin(2*PI*550*t)|0.25*sin(2*PI*660*t):s=16000:d=1:c=5.1"
    )
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", signal, "-c:a", "pcm_s16le", path],
        check=True,
    )
    channels, _ = load(path, mono=False)
    r = 1 / np.sqrt(2)
    weights = np.array([r, r, 1.0, 0.0, 0.5, 0.5]) / (2 * r + 2)  # FL FR FC LFE SL SR
    itu, _ = load(path, downmix="itu")
    np.testing.assert_allclose(itu, weights @ channels, atol=1e-6)
    mean, _ = load(path)
    np.testing.assert_allclose(mean, channels.mean(axis=0), atol=1e-6)
    loader = AudioDataLoader([path], batch_size=1, crop="start", downmix="itu", copy=True)
    [batch] = list(loader)
    np.testing.assert_allclose(np.asarray(batch.audio)[0, : len(itu)], itu, atol=1e-6)
    with pytest.raises(ValueError, match="downmix"):
        load(path, downmix="dolby")
