#!/usr/bin/env python3
"""Conformance benchmark: does `audiodecode decode` read what FFmpeg reads, and agree with it?

Every regular file under the given directories is decoded twice: by FFmpeg (the reference:
native rate and channel count, interleaved float32 from `ffmpeg -f f32le`) and by
`audiodecode decode FILE -o out.npy` (native rate, all channels). Non-audio noise is skipped
(SOURCES.md, inventory.tsv and *.md, *.txt, *.tsv, *.json, *.py); everything else is tried,
as a user would. FFmpeg "reads" a file when ffprobe finds an audio stream, ffmpeg exits 0 and
yields at least one frame; audiodecode reads it when it exits 0 and writes at least one frame.

When both read a file, the outputs are compared:

- channels: the channel counts must be equal;
- length: |Δframes| <= max(0.5 % of FFmpeg's frames, 25 ms at FFmpeg's rate);
- content: first at lag 0, then at the lag (within that same tolerance) that maximises the
  FFT cross-correlation of the channel means; over the overlap, all channels,
  SNR = 10·log10(Σref² / Σ(ref − ours)²). Content matches when SNR >= 25 dB or the Pearson
  correlation >= 0.995, or when both signals are near-silent (RMS < 1e-5). SNR 999 means
  identical samples. When the length is off and the content does not agree, the content is
  also tried near lag = Δframes (samples added or dropped at the start, such as an encoder
  delay left in): "content agrees at lag N" then says the length is the only problem.

Classes:

- match: both read, and channels, length and content agree;
- mismatch: both read but they disagree (the reason says which: channels, length, content);
- we_fail_ffmpeg_reads: FFmpeg reads the file, audiodecode reports an error (the gap to close);
- both_fail: neither reads it (usually not audio at all);
- we_read_ffmpeg_fails: audiodecode reads something FFmpeg refuses (worth a look: garbage?);
- crash: audiodecode died by a signal, panicked, or ran past --timeout, whatever FFmpeg did.

Lengths agree within max(0.5 %, 25 ms, 1152 frames): one MPEG audio frame, since two
decoders of a file cut mid-frame may disagree on its last partial frame.

Coverage = match / (files FFmpeg reads). Mismatch severity is 1 for a channel-count
mismatch, otherwise max(|Δframes| / FFmpeg frames when the length is off,
(25 − SNR) / 25 when the content is off), clipped to [0, 1].

    python3 benches/conformance.py DIR [DIR ...] [--bin PATH] [--jobs N] [--timeout S]
        [--worst K] [--json OUT.jsonl] [--ad-arg=--lenient ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_BIN = Path.home() / ".cache" / "audiodecode" / "target" / "release" / "audiodecode"
SKIP_NAMES = frozenset({"SOURCES.md", "inventory.tsv"})
SKIP_SUFFIXES = frozenset({".md", ".txt", ".tsv", ".json", ".py"})
CLASSES = (
    "match",
    "mismatch",
    "we_fail_ffmpeg_reads",
    "both_fail",
    "we_read_ffmpeg_fails",
    "crash",
)
LENGTH_REL_TOL = 0.005
LENGTH_ABS_TOL_S = 0.025
# One MPEG audio frame: two decoders of a file cut or damaged mid-frame may disagree on
# whether its last (partial) frame counts.
LENGTH_ABS_TOL_FRAMES = 1152
MIN_SNR_DB = 25.0
MIN_CORR = 0.995
SILENCE_RMS = 1e-5
SNR_CAP_DB = 999.0
XCORR_BLOCK = 1 << 16
RUST_PANIC_EXIT = 101


@dataclass(frozen=True)
class Options:
    binary: Path
    ad_args: tuple[str, ...]
    timeout: float


@dataclass
class Reference:
    """FFmpeg's decode: `audio` is (frames, channels) float32, None when FFmpeg fails."""

    audio: np.ndarray | None
    rate: int
    channels: int
    codec: str
    error: str


@dataclass
class Ours:
    """audiodecode's decode: `audio` is (frames, channels) float32, None when it fails."""

    audio: np.ndarray | None
    returncode: int | None
    error: str
    damaged: bool
    crash: str


@dataclass
class Comparison:
    ok: bool
    reason: str
    snr: float | None = None
    corr: float | None = None
    lag: int | None = None
    severity: float = 0.0


@dataclass
class Record:
    """One file's result; also one line of the --json output."""

    path: str
    ext: str
    cls: str
    reason: str
    ffmpeg_frames: int | None
    ffmpeg_rate: int
    ffmpeg_channels: int
    ours_frames: int | None
    ours_channels: int | None
    snr: float | None
    corr: float | None
    lag: int | None
    damaged: bool
    error: str
    ffmpeg_codec: str
    ffmpeg_error: str
    ours_returncode: int | None
    severity: float


# --- files -----------------------------------------------------------------------------


def is_candidate(path: Path) -> bool:
    return path.name not in SKIP_NAMES and path.suffix.lower() not in SKIP_SUFFIXES


def collect_files(dirs: Iterable[Path]) -> list[Path]:
    """Regular files (not links) under `dirs`, recursively, minus the non-audio noise."""
    found: list[Path] = []
    for root in dirs:
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                if stat.S_ISREG(path.lstat().st_mode) and is_candidate(path):
                    found.append(path)
    return sorted(set(found))


def extension(path: Path) -> str:
    return path.suffix.lower().lstrip(".") or "(none)"


# --- subprocesses ----------------------------------------------------------------------


def run(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[bytes] | None:
    """Run `cmd` capturing its output; None when it ran past `timeout` (it is killed)."""
    try:
        return subprocess.run(
            cmd, check=False, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return None


def text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").strip()


def version_line(cmd: Sequence[str]) -> str:
    try:
        proc = run(cmd, 30)
    except OSError as e:
        return f"unavailable ({e})"
    if proc is None or proc.returncode != 0:
        return "unavailable"
    lines = text(proc.stdout).splitlines()
    return lines[0] if lines else "unavailable"


# --- FFmpeg reference ------------------------------------------------------------------


def ffprobe(path: Path, timeout: float) -> tuple[int, int, str, str]:
    """(sample rate, channels, "codec/container", error) of the first audio stream."""
    cmd = [
        "ffprobe", "-v", "error", "-select_streams", "a:0",
        "-show_entries", "stream=codec_name,sample_rate,channels:format=format_name",
        "-of", "json", str(path),
    ]  # fmt: skip
    proc = run(cmd, timeout)
    if proc is None:
        return 0, 0, "", "ffprobe timed out"
    try:
        info = json.loads(proc.stdout or b"{}")
    except json.JSONDecodeError:
        info = {}
    streams = info.get("streams") or [{}]
    container = (info.get("format") or {}).get("format_name", "?")
    codec = f"{streams[0].get('codec_name', '-')}/{container}"
    rate = int(streams[0].get("sample_rate") or 0)
    channels = int(streams[0].get("channels") or 0)
    if proc.returncode != 0 or rate <= 0 or channels <= 0:
        message = first_line(text(proc.stderr)).replace(f"{path}: ", "") or "no audio stream"
        return rate, channels, codec, f"ffprobe: {message}"
    return rate, channels, codec, ""


def ffmpeg_reference(path: Path, timeout: float) -> Reference:
    rate, channels, codec, error = ffprobe(path, timeout)
    if error:
        return Reference(None, rate, channels, codec, error)
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-i", str(path),
        "-map", "0:a:0", "-vn", "-f", "f32le", "-acodec", "pcm_f32le", "-",
    ]  # fmt: skip
    proc = run(cmd, timeout)
    if proc is None:
        return Reference(None, rate, channels, codec, f"ffmpeg timed out after {timeout:g} s")
    if proc.returncode != 0:
        message = (
            first_line(text(proc.stderr)).replace(f"{path}: ", "") or f"exit {proc.returncode}"
        )
        return Reference(None, rate, channels, codec, f"ffmpeg: {message}")
    samples = np.frombuffer(proc.stdout, dtype="<f4")
    frames = len(samples) // channels
    if frames == 0:
        return Reference(None, rate, channels, codec, "ffmpeg: 0 frames")
    audio = samples[: frames * channels].reshape(frames, channels)
    return Reference(audio, rate, channels, codec, "")


def first_line(message: str) -> str:
    return message.splitlines()[0].strip() if message else ""


# --- audiodecode -----------------------------------------------------------------------


def message_lines(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def crash_reason(returncode: int | None, stderr: str, timeout: float) -> str:
    """Why the process counts as crashed, or "" when it exited normally."""
    if returncode is None:
        return f"timeout after {timeout:g} s"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    panics = [line for line in stderr.splitlines() if "panicked" in line]
    if panics or returncode == RUST_PANIC_EXIT:
        return f"panic: {panics[0].strip() if panics else f'exit {returncode}'}"
    return ""


def load_npy(path: Path) -> np.ndarray:
    """audiodecode's .npy as (frames, channels): it writes [T] for mono and [C, T] otherwise."""
    data = np.load(path)
    return data.reshape(-1, 1) if data.ndim == 1 else np.ascontiguousarray(data.T)


def decode_ours(path: Path, workdir: Path, opts: Options) -> Ours:
    out = workdir / "out.npy"
    out.unlink(missing_ok=True)
    cmd = [str(opts.binary), "decode", str(path), "-o", str(out), "-q", *opts.ad_args]
    proc = run(cmd, opts.timeout)
    stderr = text(proc.stderr) if proc else ""
    returncode = proc.returncode if proc else None
    errors = message_lines(stderr, "error: ")
    # Every `warning:` line of `decode` reports damage (what and where).
    damaged = any(message_lines(stderr, "warning: "))
    crash = crash_reason(returncode, stderr, opts.timeout)
    error = errors[0] if errors else (first_line(stderr) if returncode else "")
    audio: np.ndarray | None = None
    if returncode == 0 and not crash:
        try:
            audio = load_npy(out)
        except (OSError, ValueError) as e:
            error = f"error: cannot load the output: {e}"
        if audio is not None and len(audio) == 0:
            audio, error = None, "error: decoded 0 frames"
    elif not error:
        error = f"exit {returncode}"
    out.unlink(missing_ok=True)
    return Ours(audio, returncode, error, damaged, crash)


# --- comparison ------------------------------------------------------------------------


def next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def lagged_xcorr(ref: np.ndarray, ours: np.ndarray, max_lag: int) -> np.ndarray:
    """c[k + max_lag] = Σ_t ref[t]·ours[t + k] for |k| <= max_lag (1-D inputs).

    FFT in blocks of `ref`, so memory stays bounded however long the signals are."""
    block = max(XCORR_BLOCK, 4 * max_lag)
    padded = np.concatenate([np.zeros(max_lag), ours, np.zeros(max_lag + block)])
    out = np.zeros(2 * max_lag + 1)
    for start in range(0, len(ref), block):
        chunk = ref[start : start + block]
        window = padded[start : start + len(chunk) + 2 * max_lag]
        n = next_pow2(len(chunk) + len(window))
        spectrum = np.conj(np.fft.rfft(chunk, n)) * np.fft.rfft(window, n)
        out += np.fft.irfft(spectrum, n)[: 2 * max_lag + 1]
    return out


def shifted(x: np.ndarray, lag: int) -> np.ndarray:
    """y[t] = x[t + lag], zero where t + lag < 0."""
    return x[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, dtype=x.dtype), x])


def best_lag(ref: np.ndarray, ours: np.ndarray, max_lag: int, centre: int = 0) -> int:
    """The lag in centre ± max_lag (ours[t + lag] ~ ref[t]) maximising the channel means'
    cross-correlation."""
    corr = lagged_xcorr(ref.mean(axis=1), shifted(ours.mean(axis=1), centre), max_lag)
    return centre + int(np.argmax(corr)) - max_lag


def overlap(ref: np.ndarray, ours: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """The aligned parts of `ref` and `ours` (ours[t + lag] against ref[t]), as float64."""
    if lag >= 0:
        n = max(min(len(ref), len(ours) - lag), 0)
        a, b = ref[:n], ours[lag : lag + n]
    else:
        n = max(min(len(ref) + lag, len(ours)), 0)
        a, b = ref[-lag : -lag + n], ours[:n]
    return a.astype(np.float64), b.astype(np.float64)


def snr_db(a: np.ndarray, b: np.ndarray) -> float:
    signal_energy = float(np.sum(a * a))
    noise_energy = float(np.sum((a - b) ** 2))
    if noise_energy == 0.0:
        return SNR_CAP_DB
    if signal_energy == 0.0:
        return -SNR_CAP_DB
    return max(min(10.0 * math.log10(signal_energy / noise_energy), SNR_CAP_DB), -SNR_CAP_DB)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    if len(a) < 2 or a.std() == 0.0 or b.std() == 0.0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def means_agree(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the (non-silent) channel means agree though the channels do not."""
    mean_a, mean_b = a.mean(axis=1), b.mean(axis=1)
    return rms(mean_a) >= SILENCE_RMS and snr_db(mean_a, mean_b) >= MIN_SNR_DB


def measure(ref: np.ndarray, ours: np.ndarray, lag: int) -> Comparison:
    a, b = overlap(ref, ours, lag)
    if len(a) == 0:
        return Comparison(False, f"content: no overlap at lag {lag}", lag=lag, severity=1.0)
    snr, corr = snr_db(a, b), pearson(a, b)
    ok = snr >= MIN_SNR_DB or corr >= MIN_CORR
    reason = "" if ok else f"content: SNR {snr:.1f} dB, corr {corr:.4f}, lag {lag}"
    if not ok and a.shape[1] > 1 and means_agree(a, b):
        reason += " (channel means agree: channel order/layout?)"
    severity = 0.0 if ok else min(max((MIN_SNR_DB - snr) / MIN_SNR_DB, 0.0), 1.0)
    return Comparison(ok, reason, snr, corr, lag, severity)


def snr_or_worst(comparison: Comparison) -> float:
    return -math.inf if comparison.snr is None else comparison.snr


def compare_content(ref: np.ndarray, ours: np.ndarray, max_lag: int) -> Comparison:
    if rms(ref) < SILENCE_RMS and rms(ours) < SILENCE_RMS:
        return Comparison(True, "", lag=0)
    at_zero = measure(ref, ours, 0)
    if at_zero.ok:
        return at_zero
    lag = best_lag(ref, ours, max_lag)
    at_lag = measure(ref, ours, lag) if lag != 0 else at_zero
    return at_lag if snr_or_worst(at_lag) >= snr_or_worst(at_zero) else at_zero


def offset_explains(
    ref: np.ndarray, ours: np.ndarray, delta: int, max_lag: int, content: Comparison
) -> Comparison:
    """A length mismatch often is samples added or dropped at the start (encoder delay):
    the content then agrees near lag = Δframes, beyond the lags searched first. Diagnostic
    only: the file stays a (length) mismatch, but its severity is the length error alone."""
    at_delta = measure(ref, ours, best_lag(ref, ours, max_lag, centre=delta))
    return at_delta if at_delta.ok else content


def compare(ref: np.ndarray, ours: np.ndarray, rate: int) -> Comparison:
    if ref.shape[1] != ours.shape[1]:
        reason = f"channels: ffmpeg {ref.shape[1]}, ours {ours.shape[1]}"
        return Comparison(False, reason, severity=1.0)
    tolerance = max(LENGTH_REL_TOL * len(ref), LENGTH_ABS_TOL_S * rate, LENGTH_ABS_TOL_FRAMES)
    delta = len(ours) - len(ref)
    max_lag = max(int(tolerance), 1)
    content = compare_content(ref, ours, max_lag)
    if abs(delta) > tolerance and not content.ok:
        content = offset_explains(ref, ours, delta, max_lag, content)
    problems = [content.reason] if not content.ok else []
    severity = content.severity
    if abs(delta) > tolerance:
        aligned = f"; content agrees at lag {content.lag}" if content.ok and content.lag else ""
        problems.insert(0, f"length: Δ {delta / rate:+.3f} s ({delta:+d} frames{aligned})")
        severity = max(severity, min(abs(delta) / len(ref), 1.0))
    content.ok, content.reason, content.severity = not problems, "; ".join(problems), severity
    return content


# --- one file --------------------------------------------------------------------------


def classify(ref: Reference, ours: Ours) -> tuple[str, str, Comparison | None]:
    """(class, reason, comparison when both read)."""
    if ours.crash:
        return "crash", ours.crash, None
    if ref.audio is None:
        if ours.audio is None:
            return "both_fail", ours.error, None
        return "we_read_ffmpeg_fails", ref.error, None
    if ours.audio is None:
        return "we_fail_ffmpeg_reads", ours.error, None
    comparison = compare(ref.audio, ours.audio, ref.rate)
    return ("match" if comparison.ok else "mismatch"), comparison.reason, comparison


class Workdirs:
    """One scratch directory per worker thread, all under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.local = threading.local()

    def get(self) -> Path:
        if not hasattr(self.local, "path"):
            self.local.path = Path(tempfile.mkdtemp(prefix="worker-", dir=self.root))
        return self.local.path


def examine(path: Path, opts: Options, workdirs: Workdirs) -> Record:
    workdir = workdirs.get()
    ref = ffmpeg_reference(path, opts.timeout)
    ours = decode_ours(path, workdir, opts)
    cls, reason, comparison = classify(ref, ours)
    comparison = comparison or Comparison(False, "")
    return Record(
        path=str(path),
        ext=extension(path),
        cls=cls,
        reason=reason,
        ffmpeg_frames=None if ref.audio is None else len(ref.audio),
        ffmpeg_rate=ref.rate,
        ffmpeg_channels=ref.channels,
        ours_frames=None if ours.audio is None else len(ours.audio),
        ours_channels=None if ours.audio is None else ours.audio.shape[1],
        snr=comparison.snr,
        corr=comparison.corr,
        lag=comparison.lag,
        damaged=ours.damaged,
        error=ours.error,
        ffmpeg_codec=ref.codec,
        ffmpeg_error=ref.error,
        ours_returncode=ours.returncode,
        severity=comparison.severity,
    )


def examine_all(files: list[Path], opts: Options, jobs: int) -> list[Record]:
    records: list[Record] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="conformance-") as scratch:
        workdirs = Workdirs(Path(scratch))
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(examine, path, opts, workdirs) for path in files]
            for done, future in enumerate(as_completed(futures), 1):
                records.append(future.result())
                if done % 100 == 0 or done == len(files):
                    elapsed = time.monotonic() - started
                    print(f"[{done}/{len(files)}] {elapsed:.0f} s", file=sys.stderr, flush=True)
    return sorted(records, key=lambda r: r.path)


# --- report ----------------------------------------------------------------------------


def ffmpeg_reads(record: Record) -> bool:
    return record.ffmpeg_frames is not None


def coverage(records: Sequence[Record]) -> str:
    readable = sum(ffmpeg_reads(r) for r in records)
    matched = sum(r.cls == "match" for r in records)
    return f"{100.0 * matched / readable:.1f}%" if readable else "n/a"


def display_path(path: str, roots: Sequence[Path]) -> str:
    for root in roots:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            continue
    return path


def normalise_error(error: str, path: str) -> str:
    """The error without its `error: PATH:` prefix, numbers collapsed to N."""
    message = error.removeprefix("error: ").removeprefix("warning: ")
    message = message.replace(f"{path}: ", "").replace(path, "FILE")
    return re.sub(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?", "N", message)


def print_header(args: argparse.Namespace, files: int, elapsed: float) -> None:
    print("# AudioDecode conformance vs FFmpeg")
    print(f"directories: {' '.join(str(d) for d in args.dirs)}")
    print(f"files:       {files}")
    print(f"audiodecode: {args.bin} ({version_line([str(args.bin), '--version'])})")
    print(f"ad args:     {' '.join(args.ad_arg) or '(none)'}")
    print(f"ffmpeg:      {version_line(['ffmpeg', '-version'])}")
    print(f"jobs {args.jobs}, timeout {args.timeout:g} s, wall time {elapsed:.0f} s")


def print_classes(records: Sequence[Record]) -> None:
    counts = Counter(r.cls for r in records)
    readable = sum(ffmpeg_reads(r) for r in records)
    damaged = Counter(r.cls for r in records if r.damaged)
    print("\n## Classes")
    for cls in CLASSES:
        share = 100.0 * counts[cls] / max(len(records), 1)
        note = f"  ({damaged[cls]} decoded with damage)" if damaged[cls] else ""
        print(f"{cls:<22} {counts[cls]:>6}  {share:5.1f}%{note}")
    print(f"FFmpeg reads {readable} files; coverage = match / FFmpeg reads = {coverage(records)}")


def print_by_extension(records: Sequence[Record]) -> None:
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[record.ext].append(record)
    short = {
        "match": "match",
        "mismatch": "mism",
        "we_fail_ffmpeg_reads": "wefail",
        "both_fail": "both",
        "we_read_ffmpeg_fails": "ffail",
        "crash": "crash",
    }
    print("\n## By extension (wefail = we_fail_ffmpeg_reads, ffail = we_read_ffmpeg_fails)")
    print(f"{'ext':<10}{'files':>6}" + "".join(f"{s:>7}" for s in short.values()) + "  coverage")
    for ext, group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        counts = Counter(r.cls for r in group)
        cells = "".join(f"{counts[c]:>7}" for c in short)
        print(f"{ext:<10}{len(group):>6}{cells}  {coverage(group):>8}")


def print_failures(records: Sequence[Record], roots: Sequence[Path]) -> None:
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        if record.cls == "we_fail_ffmpeg_reads":
            groups[normalise_error(record.error, record.path)].append(record)
    print(f"\n## we_fail_ffmpeg_reads by reason ({len(groups)} reasons)")
    for reason, group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        codecs = Counter(r.ffmpeg_codec for r in group).most_common(4)
        print(f"{len(group):>5}  {reason}")
        print(f"       ffmpeg: {', '.join(f'{c} x{n}' for c, n in codecs)}")
        for record in group[:2]:
            print(f"       e.g. {display_path(record.path, roots)}")


def print_worst(records: Sequence[Record], roots: Sequence[Path], worst: int) -> None:
    mismatches = [r for r in records if r.cls == "mismatch"]
    mismatches.sort(key=lambda r: (-r.severity, r.path))
    print(f"\n## Worst mismatches ({min(worst, len(mismatches))} of {len(mismatches)})")
    for r in mismatches[:worst]:
        lengths = f"ffmpeg {r.ffmpeg_frames}x{r.ffmpeg_channels} @ {r.ffmpeg_rate} Hz"
        lengths += f", ours {r.ours_frames}x{r.ours_channels}"
        damage = ", damaged" if r.damaged else ""
        print(f"{r.severity:5.2f}  {display_path(r.path, roots)}  [{r.ffmpeg_codec}{damage}]")
        print(f"       {r.reason}; {lengths}")


def print_crashes(records: Sequence[Record], roots: Sequence[Path]) -> None:
    crashes = [r for r in records if r.cls == "crash"]
    print(f"\n## Crashes ({len(crashes)})")
    for r in crashes:
        print(f"{display_path(r.path, roots)}  [{r.ffmpeg_codec}]  {r.reason}")


def write_json(records: Sequence[Record], out: Path) -> None:
    with out.open("w") as f:
        for record in records:
            fields = asdict(record)
            row = {"path": fields.pop("path"), "ext": fields.pop("ext"), "class": fields.pop("cls")}
            row.update(fields)
            f.write(json.dumps(row) + "\n")


# --- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare audiodecode's decoder with FFmpeg on every file under DIRs.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    parser.add_argument("--bin", type=Path, default=DEFAULT_BIN, help="audiodecode binary")
    parser.add_argument("--jobs", type=int, default=2, help="files in flight (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per subprocess")
    parser.add_argument("--worst", type=int, default=25, help="mismatches to list")
    parser.add_argument("--json", type=Path, help="write one JSON record per file here")
    parser.add_argument(
        "--ad-arg",
        action="append",
        default=[],
        help="extra flag for `audiodecode decode` (repeatable; write --ad-arg=--lenient)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.bin.is_file():
        print(f"error: no audiodecode binary at {args.bin}", file=sys.stderr)
        return 2
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    files = collect_files(args.dirs)
    opts = Options(args.bin, tuple(args.ad_arg), args.timeout)
    started = time.monotonic()
    records = examine_all(files, opts, max(args.jobs, 1))
    roots = [d.resolve() for d in args.dirs] + list(args.dirs)
    print_header(args, len(files), time.monotonic() - started)
    print_classes(records)
    print_by_extension(records)
    print_failures(records, roots)
    print_worst(records, roots, args.worst)
    print_crashes(records, roots)
    if args.json:
        write_json(records, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
