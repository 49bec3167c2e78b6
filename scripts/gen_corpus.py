#!/usr/bin/env python3
"""Generate a deterministic synthetic audio corpus for AudioDecode tests and benchmarks.

Two modes:

* clips (default): ``--count`` short clips of tones, sweeps, noise and espeak-ng
  speech at mixed sample rates / channel counts, encoded round-robin into the
  requested formats, plus ``manifest.jsonl`` (NeMo-style: audio_filepath,
  duration, label).
* ``--long SECONDS``: one 44.1 kHz stereo recording (speech + music-like tones +
  noise) encoded once per format as ``long.<ext>``; used by the decode benchmark.

Everything is synthesised in numpy from per-clip seeded RNGs and the encoders run
with bit-exact flags, so a given seed yields the same files on every run and in
any thread order. If ``OUT_DIR/params.json`` matches the requested parameters and
every file in ``manifest.jsonl`` exists, the run is skipped.

Requires ffmpeg and espeak-ng on PATH (sox is optional and not needed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# Bump whenever the synthesis or encoding changes so cached corpora are rebuilt.
GENERATOR_VERSION = 1

ALL_FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "m4a")
SAMPLE_RATES = (16000, 22050, 44100, 48000)
CLASSES = ("tone", "noise", "speech", "sweep")
LONG_SR = 44100
# Two workers: the machine this runs on is small, and ffmpeg/espeak are
# single-threaded here (-threads 1), so two keeps both cores busy without thrashing.
POOL_WORKERS = 2

# Bit-exact flags keep container metadata (encoder version strings, Ogg serial
# numbers) out of the output so files are byte-reproducible for a given seed.
BITEXACT = ["-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"]

# Long-mode encoders are fixed by the benchmark spec.
LONG_CODECS: dict[str, list[str]] = {
    "wav": ["-c:a", "pcm_s16le"],
    # 16-bit like the WAV (and typical speech corpora); float input would give 24-bit.
    "flac": ["-c:a", "flac", "-sample_fmt", "s16"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "5"],
    "opus": ["-c:a", "libopus", "-b:a", "96k"],
    "m4a": ["-c:a", "aac", "-b:a", "192k"],
}

# Small made-up vocabulary; sentences are det-adj-noun-verb-det-noun-adverb.
WORDS: dict[str, tuple[str, ...]] = {
    "det": ("the", "a", "one", "that", "every", "this"),
    "adj": (
        "quick", "quiet", "green", "heavy", "bright", "small",
        "old", "lazy", "clever", "red", "tall", "happy",
    ),
    "noun": (
        "robot", "river", "teacher", "window", "garden", "engine", "letter",
        "captain", "forest", "signal", "baker", "camera", "bridge", "violin",
    ),
    "verb": (
        "reads", "builds", "finds", "carries", "paints", "follows",
        "opens", "counts", "watches", "repairs", "draws", "moves",
    ),
    "adv": (
        "slowly", "today", "again", "carefully", "at night",
        "every morning", "without a sound", "near the station",
    ),
}  # fmt: skip
VOICES = ("en-us", "en-us+f3", "en-gb", "en-gb+m3", "en-029", "en-us+f2")


def clip_codec_args(fmt: str, sr: int) -> list[str]:
    """Encoder arguments for a clip; MPEG-2 layer III tops out at 160 kbit/s below 32 kHz."""
    if fmt == "mp3":
        return ["-c:a", "libmp3lame", "-b:a", "128k" if sr >= 32000 else "64k"]
    if fmt == "m4a":
        return ["-c:a", "aac", "-b:a", "128k"]
    return LONG_CODECS[fmt]


def run_tool(cmd: list[str], stdin: bytes | None = None) -> bytes:
    """Run a tool, returning stdout; on failure raise with its stderr for diagnosis."""
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"{cmd[0]} failed (rc={proc.returncode}): {err}")
    return proc.stdout


# ---------------------------------------------------------------- synthesis


def make_sentence(rng: np.random.Generator) -> str:
    def pick(kind: str) -> str:
        options = WORDS[kind]
        return options[int(rng.integers(len(options)))]

    words = [
        pick("det"), pick("adj"), pick("noun"), pick("verb"),
        pick("det"), pick("noun"), pick("adv"),
    ]  # fmt: skip
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def speech(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Mono espeak-ng speech at ``sr``, trimmed or zero-padded to ``n`` samples."""
    # espeak speaks ~2.7 words/s at 160 wpm; over-generate so we rarely need padding.
    target_words = n / sr * 3.0 + 4
    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < target_words:
        sentences.append(make_sentence(rng))
    voice = VOICES[int(rng.integers(len(VOICES)))]
    wpm = int(rng.integers(140, 190))
    pitch = int(rng.integers(30, 70))
    cmd = ["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "--stdout"]
    wav = run_tool([*cmd, " ".join(sentences)])
    # espeak always emits 22.05 kHz; let ffmpeg resample rather than a crude numpy interp.
    pcm = run_tool(
        ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", "pipe:0"]
        + ["-f", "f32le", "-ac", "1", "-ar", str(sr), "pipe:1"],
        stdin=wav,
    )
    x = np.frombuffer(pcm, dtype="<f4").astype(np.float64)
    out = np.zeros(n)
    out[: min(n, x.size)] = x[:n]
    return out


def tones(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    out = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        f = rng.uniform(80.0, min(4000.0, 0.4 * sr))
        # Slow tremolo so the signal is not perfectly stationary.
        am = 1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 3.0) * t)
        out += rng.uniform(0.3, 1.0) * am * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
    return out


def sweep(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Linear or exponential chirp; exercises resampler anti-aliasing up to near Nyquist."""
    dur = n / sr
    t = np.arange(n) / sr
    f0 = rng.uniform(30.0, 500.0)
    f1 = rng.uniform(0.5, 0.95) * sr / 2
    if rng.random() < 0.5:
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * dur))
    else:
        k = np.log(f1 / f0)
        phase = 2 * np.pi * f0 * dur / k * (np.exp(t / dur * k) - 1.0)
    if rng.random() < 0.5:
        phase = phase[::-1]  # down-sweep
    return np.sin(phase)


def colored_noise(rng: np.random.Generator, n: int, channels: int) -> np.ndarray:
    """White, pink or brown noise, independent per channel (decorrelated stereo)."""
    alpha = float(rng.choice([0.0, 1.0, 2.0]))  # PSD ~ 1/f**alpha
    white = rng.standard_normal((channels, n))
    if alpha == 0.0:
        return white
    spec = np.fft.rfft(white, axis=1)
    f = np.arange(spec.shape[1], dtype=np.float64)
    f[0] = 1.0  # avoid division by zero; DC is removed just below anyway
    spec *= f ** (-alpha / 2)
    spec[:, 0] = 0.0
    return np.fft.irfft(spec, n=n, axis=1)


def rms_normalise(x: np.ndarray, target: float) -> np.ndarray:
    r = float(np.sqrt(np.mean(x * x)))
    return x * (target / r) if r > 1e-12 else x


def pan(x: np.ndarray, channels: int, rng: np.random.Generator) -> np.ndarray:
    """Equal-power pan a mono signal into ``channels`` (a no-op reshape for mono)."""
    if channels == 1:
        return x[None, :]
    theta = rng.uniform(0.15, 0.85) * np.pi / 2
    return np.stack([np.cos(theta) * x, np.sin(theta) * x])


def component(kind: str, rng: np.random.Generator, n: int, sr: int, ch: int) -> np.ndarray:
    if kind == "noise":
        return colored_noise(rng, n, ch)
    gen: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
        "tone": tones,
        "sweep": sweep,
        "speech": speech,
    }
    return pan(gen[kind](rng, n, sr), ch, rng)


def fade(x: np.ndarray, sr: int) -> None:
    """10 ms fades so clip edges are not hard clicks (in place)."""
    k = min(x.shape[-1] // 2, sr // 100)
    if k:
        ramp = np.linspace(0.0, 1.0, k)
        x[..., :k] *= ramp
        x[..., -k:] *= ramp[::-1]


# ---------------------------------------------------------------- encoding


def encode(
    dest: Path,
    codec: list[str],
    sr: int,
    channels: int,
    pcm: np.ndarray | None = None,
    src: Path | None = None,
) -> None:
    """Encode float PCM to ``dest`` atomically (write ``.part``, then rename).

    The input is either ``pcm`` of shape (channels, n), piped to ffmpeg, or ``src``, a raw
    interleaved f32le file (long mode, so two workers don't each hold a copy in memory).
    """
    part = dest.with_name(dest.stem + ".part" + dest.suffix)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-threads", "1"]
    cmd += ["-f", "f32le", "-ar", str(sr), "-ac", str(channels)]
    cmd += ["-i", str(src) if src else "pipe:0", *codec, *BITEXACT, str(part)]
    data = None if pcm is None else np.ascontiguousarray(pcm.T, dtype="<f4").tobytes()
    run_tool(cmd, stdin=data)
    os.replace(part, dest)


def make_clip(
    index: int,
    seed: int,
    fmt: str,
    labels: bool,
    min_s: float,
    max_s: float,
    out: Path,
    rates: tuple[int, ...] = SAMPLE_RATES,
) -> dict[str, object]:
    # Seed per clip (not one shared stream) so results do not depend on thread order.
    rng = np.random.default_rng([seed, index])
    sr = int(rng.choice(rates))
    ch = int(rng.integers(1, 3))
    n = round(rng.uniform(min_s, max_s) * sr)
    label = CLASSES[int(rng.integers(len(CLASSES)))]
    kinds = [label]
    if not labels:
        # Unlabelled corpora get richer mixtures; the label stays the dominant part.
        others = [c for c in CLASSES if c != label]
        extra = int(rng.integers(0, 3))
        kinds += [str(k) for k in rng.choice(others, size=extra, replace=False)]
    mix = np.zeros((ch, n))
    for i, kind in enumerate(kinds):
        gain = 1.0 if i == 0 else rng.uniform(0.1, 0.4)
        mix += gain * rms_normalise(component(kind, rng, n, sr, ch), 0.2)
    fade(mix, sr)
    peak = float(np.max(np.abs(mix)))
    mix *= rng.uniform(0.25, 0.9) / max(peak, 1e-9)
    dest = out / f"clip_{index:05d}.{fmt}"
    encode(dest, clip_codec_args(fmt, sr), sr, ch, pcm=mix)
    return {
        "audio_filepath": str(dest.resolve()),
        "duration": round(n / sr, 4),
        "label": label,
        "format": fmt,
        "sample_rate": sr,
        "channels": ch,
        "components": kinds,
    }


def synth_long(seconds: float, seed: int) -> np.ndarray:
    """(2, n) float32 mixture: centred speech, panned pentatonic notes + bass, pink noise."""
    rng = np.random.default_rng([seed, 1_000_003])
    sr = LONG_SR
    n = round(seconds * sr)
    out = np.zeros((2, n), dtype=np.float32)

    talk = speech(rng, n, sr)
    last = int(np.flatnonzero(talk).max(initial=0)) + 1
    if last < n:  # espeak came up short: loop it rather than leave trailing silence
        talk = np.resize(talk[:last], n)
    out += pan(rms_normalise(talk, 0.10), 2, rng).astype(np.float32)

    # Music-like layer: plucked notes from A-minor pentatonic at 96 bpm with harmonics.
    beat = 60.0 / 96.0
    scale = np.array([57, 60, 62, 64, 67, 69, 72, 74, 76])
    music = np.zeros((2, n), dtype=np.float32)
    start = 0.0
    while start < seconds:
        dur = beat * float(rng.choice([0.5, 1.0, 1.0, 2.0]))
        freq = 440.0 * 2 ** ((int(rng.choice(scale)) - 69) / 12)
        i0 = int(start * sr)
        length = min(int(dur * 1.5 * sr), n - i0)
        t = np.arange(length) / sr
        env = (1 - np.exp(-t / 0.004)) * np.exp(-t / (0.5 * dur))
        note = sum(h**-1.5 * np.sin(2 * np.pi * freq * h * t) for h in range(1, 6))
        music[:, i0 : i0 + length] += pan(env * note, 2, rng).astype(np.float32)
        start += dur
    # Bass drone whose root changes every bar, built from a phase accumulator.
    roots = 440.0 * 2 ** (
        (rng.choice([45, 41, 43, 40], size=int(seconds / (4 * beat)) + 1) - 69) / 12
    )
    bar = (np.arange(n) / sr / (4 * beat)).astype(np.int64)
    phase = 2 * np.pi * np.cumsum(roots[bar]) / sr
    bass = (np.sin(phase) + 0.3 * np.sin(2 * phase)).astype(np.float32)
    music += 0.5 * bass
    out += rms_normalise(music, 0.06).astype(np.float32)

    out += rms_normalise(colored_noise(rng, n, 2), 0.01).astype(np.float32)
    fade(out, sr)
    peak = float(np.max(np.abs(out)))
    if peak > 0.9:
        out *= 0.9 / peak
    return out


# ---------------------------------------------------------------- driver


def up_to_date(out: Path, params: dict[str, object]) -> list[dict[str, object]] | None:
    """Return the existing manifest if it was generated with identical params."""
    try:
        if json.loads((out / "params.json").read_text()) != params:
            return None
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    except (OSError, ValueError):
        return None
    if not rows or not all(Path(str(r["audio_filepath"])).is_file() for r in rows):
        return None
    return rows


def clean(out: Path) -> None:
    """Remove only files this script names, never anything else in OUT_DIR."""
    for name in ("manifest.jsonl", "params.json", ".long.f32"):
        (out / name).unlink(missing_ok=True)
    for pattern in ("clip_*.*", "long.*", "*.part.*"):
        for p in out.glob(pattern):
            if p.is_file() and p.suffix.lstrip(".") in ALL_FORMATS:
                p.unlink()


def write_outputs(out: Path, params: dict[str, object], rows: list[dict[str, object]]) -> None:
    (out / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    # Manifest last and atomically: its presence marks a complete corpus.
    tmp = out / "manifest.jsonl.part"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, out / "manifest.jsonl")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path, help="output directory (created if missing)")
    p.add_argument("--count", type=int, default=200, help="number of clips (default 200)")
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-seconds", type=float, default=15.0)
    p.add_argument(
        "--formats",
        default=",".join(ALL_FORMATS),
        help="comma-separated subset of " + ",".join(ALL_FORMATS),
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rates",
        default=",".join(str(r) for r in SAMPLE_RATES),
        help="comma-separated sample rates to draw clips from",
    )
    p.add_argument(
        "--labels",
        action="store_true",
        help="single-class clips so the manifest label is unambiguous",
    )
    p.add_argument(
        "--long",
        type=float,
        metavar="SECONDS",
        help="instead of clips, write one 44.1 kHz stereo recording per format as long.<ext>",
    )
    a = p.parse_args(argv)
    a.formats = [f.strip().lower() for f in a.formats.split(",") if f.strip()]
    try:
        a.rates = tuple(int(r) for r in a.rates.split(",") if r.strip())
    except ValueError:
        p.error("--rates must be integers")
    if not a.rates or min(a.rates) < 8000:
        p.error("--rates needs rates of at least 8000 Hz")
    bad = sorted(set(a.formats) - set(ALL_FORMATS))
    if bad or not a.formats:
        p.error(f"unknown format(s) {bad}; choose from {','.join(ALL_FORMATS)}")
    if a.long is None and (a.count < 1 or not 0 < a.min_seconds <= a.max_seconds):
        p.error("need --count >= 1 and 0 < --min-seconds <= --max-seconds")
    if a.long is not None and a.long <= 0:
        p.error("--long must be positive")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    missing = [tool for tool in ("ffmpeg", "espeak-ng") if shutil.which(tool) is None]
    if missing:
        print(
            f"gen_corpus: missing required tool(s): {', '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    out: Path = a.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    params: dict[str, object] = {"generator_version": GENERATOR_VERSION, "seed": a.seed}
    params["formats"] = a.formats
    if a.long is not None:
        params |= {"mode": "long", "seconds": a.long}
    else:
        params |= {"mode": "clips", "count": a.count, "labels": a.labels}
        params |= {"min_seconds": a.min_seconds, "max_seconds": a.max_seconds}
        if a.rates != SAMPLE_RATES:
            params["rates"] = list(a.rates)

    existing = up_to_date(out, params)
    if existing is not None:
        print(f"gen_corpus: {out} up to date ({len(existing)} files, same params), skipped")
        return 0

    t0 = time.perf_counter()
    clean(out)
    if a.long is not None:
        pcm = synth_long(a.long, a.seed)
        # Spill to a raw file once so the two encoder workers stream from disk.
        raw = out / ".long.f32"
        np.ascontiguousarray(pcm.T, dtype="<f4").tofile(raw)
        dests = [out / f"long.{fmt}" for fmt in a.formats]
        with ThreadPoolExecutor(POOL_WORKERS) as pool:
            jobs = [
                pool.submit(encode, d, LONG_CODECS[d.suffix[1:]], LONG_SR, 2, src=raw)
                for d in dests
            ]
            for job in jobs:
                job.result()
        raw.unlink()
        dur = round(pcm.shape[1] / LONG_SR, 4)
        rows = [
            {
                "audio_filepath": str(d),
                "duration": dur,
                "label": "mixture",
                "format": d.suffix[1:],
            }
            for d in dests
        ]
        desc = f"{len(rows)} x {dur:.1f} s long recordings ({','.join(a.formats)})"
    else:
        with ThreadPoolExecutor(POOL_WORKERS) as pool:
            jobs = [
                pool.submit(
                    make_clip,
                    i,
                    a.seed,
                    a.formats[i % len(a.formats)],  # round-robin formats
                    a.labels,
                    a.min_seconds,
                    a.max_seconds,
                    out,
                    a.rates,
                )
                for i in range(a.count)
            ]
            rows = [job.result() for job in jobs]
        fmts = Counter(str(r["format"]) for r in rows)
        labels = Counter(str(r["label"]) for r in rows)
        total = sum(float(str(r["duration"])) for r in rows)
        desc = (
            f"{len(rows)} clips, {total:.1f} s audio "
            f"(formats {dict(sorted(fmts.items()))}, labels {dict(sorted(labels.items()))})"
        )
    write_outputs(out, params, rows)
    size = sum(Path(str(r["audio_filepath"])).stat().st_size for r in rows)
    elapsed = time.perf_counter() - t0
    print(f"gen_corpus: wrote {desc}, {size / 2**20:.1f} MiB -> {out} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
