"""``load``: decode one file through the daemon, with librosa's conventions."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from audiodecode import _daemon
from audiodecode._client import Connection
from audiodecode._errors import AudioDecodeError, DaemonError, DamagedAudioWarning
from audiodecode._paths import absolute
from audiodecode._protocol import Downmix, LoadedAudio, LoadSpec, Quality, Request, Response
from audiodecode._validate import choice, number, sample_rate

# One connection per (process, socket), reused across calls: a handshake per file would
# cost more than decoding a short clip. The pid in the key keeps forked children (e.g.
# DataLoader workers) from sharing their parent's socket.
_connections: dict[tuple[int, Path | None], Connection] = {}
_connections_lock = threading.Lock()
# The shortest ``duration`` at any rate: an empty slice panics a daemon worker.
MIN_DURATION = 1e-3


def _connection() -> tuple[Connection, bool]:
    """The cached connection for this process and daemon, and whether it is new."""
    active = _daemon.active_daemon()
    key = (os.getpid(), None if active is None else active.socket_path)
    with _connections_lock:
        conn = _connections.get(key)
        if conn is not None and not conn.closed:
            return conn, False
        conn = _connections[key] = _daemon.connect()
        return conn, True


def _request(spec: LoadSpec) -> LoadedAudio:
    while True:
        conn, fresh = _connection()
        try:
            return conn.request(Request.Load(spec), Response.Loaded).audio
        except DaemonError:
            # A cached connection to a daemon that has since stopped: reconnect (starting
            # the per-user daemon again if need be) and retry once.
            if fresh or not conn.closed:
                raise


def _duration(value: object, rate: int | None) -> float:
    """Seconds to decode: at least one output sample (a shorter slice would be empty,
    which a daemon worker cannot produce), and never under MIN_DURATION."""
    seconds = number("duration", value, above=0)
    shortest = MIN_DURATION if rate is None else max(MIN_DURATION, 1 / rate)
    if seconds < shortest:
        raise ValueError(
            f"duration must be at least {shortest:g} s, not {value}: a slice needs at "
            "least one output sample (duration=None reads to the end)"
        )
    return seconds


def load(
    path: str | os.PathLike[str],
    sr: int | None = None,
    mono: bool = True,
    offset: float = 0.0,
    duration: float | None = None,
    dtype: DTypeLike = np.float32,
    quality: str = "hq",
    strict: bool = False,
    downmix: str = "mean",
) -> tuple[np.ndarray, int]:
    """Decode ``path`` and return ``(samples, sample_rate)`` like ``librosa.load``, except
    that ``sr=None`` (the default here) keeps the file's own rate.

    Samples are floats in [-1, 1], shaped ``[T]`` for mono (or a single-channel file) and
    ``[C, T]`` otherwise. ``offset``/``duration`` in seconds select a slice without decoding
    the rest. Errors raise ``AudioDecodeError`` subclasses naming the file.

    ``downmix`` says how ``mono`` combines channels: ``"mean"`` (librosa's convention) or
    ``"itu"`` (ITU-R BS.775 weights, FFmpeg's ``-ac 1``: centre full, surrounds -6 dB, LFE
    dropped; the same as the mean for stereo).

    A damaged or truncated file gives what decodes around the damage, as FFmpeg and
    librosa do, with a ``DamagedAudioWarning`` saying what and where; ``strict=True``
    raises instead.
    """
    rate = None if sr is None else sample_rate("sr", sr)
    spec = LoadSpec(
        path=absolute(path),
        sample_rate=rate,
        mono=mono,
        offset=number("offset", offset, at_least=0),
        duration=None if duration is None else _duration(duration, rate),
        quality=choice("quality", quality, Quality),
        strict=bool(strict),
        downmix=choice("downmix", downmix, Downmix),
    )
    try:
        audio = _request(spec)
    except DaemonError:
        raise
    except AudioDecodeError as e:
        if e.path is None:
            e.path = spec.path
        raise
    if audio.damage is not None:
        warnings.warn(DamagedAudioWarning(spec.path, audio.damage), stacklevel=2)
    samples = np.frombuffer(audio.samples, dtype="<f4").reshape(audio.channels, audio.frames)
    if audio.channels == 1:
        samples = samples[0]
    return samples.astype(dtype, copy=False), audio.sample_rate
