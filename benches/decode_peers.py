#!/usr/bin/env python3
"""Decode benchmark: AudioDecode CLI vs common Python ways to get 16 kHz mono float32.

Part 1 (default): for each format of one long 44.1 kHz stereo recording (made by
scripts/gen_corpus.py --long), time how long each method takes to produce 16 kHz mono
float32 samples in memory. Reports the minimum of --repeat runs after one untimed
warm-up, the ratios audiodecode/peer (< 1.0 means audiodecode is faster) and checks that
audiodecode's output agrees with the ffmpeg f32le reference.

Part 2 (--scaling): decode a corpus of short clips with `audiodecode decode -j 1` vs
`-j 2` and report the speedup.

See benches/README.md for the targets and how to read the table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GEN_CORPUS = REPO / "scripts" / "gen_corpus.py"
CACHE = Path.home() / ".cache" / "audiodecode"
DEFAULT_BIN = CACHE / "target" / "release" / "audiodecode"
FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "m4a")
TARGET_SR = 16000
# Targets from benches/README.md.
FLOOR_RATIO_TARGET = 1.3
SCALING_TARGET = 1.8
# Output agreement thresholds vs the ffmpeg f32le reference.
MAX_COUNT_DIFF = 0.01
MIN_CORR = 0.99

Decoder = Callable[[Path], "np.ndarray | None"]


@dataclass
class Peer:
    key: str
    header: str  # short column title
    doc: str  # one-line legend entry
    fn: Decoder


@dataclass
class Measurement:
    times: list[float] = field(default_factory=list)
    samples: int | None = None
    error: str | None = None
    output: np.ndarray | None = None  # kept only until the agreement checks ran

    @property
    def best(self) -> float | None:
        return min(self.times) if self.times and self.error is None else None


def run_quiet(cmd: list[str]) -> bytes:
    """Run a command capturing stdout; raise with stderr on failure."""
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)}")
    return proc.stdout


# ------------------------------------------------------------------ peers


def make_peers(binary: Path, scratch: Path) -> list[Peer]:
    out_f32 = scratch / f"audiodecode-bench-{os.getpid()}.f32"

    def audiodecode(path: Path) -> np.ndarray:
        cmd = [str(binary), "decode", str(path), "--sr", str(TARGET_SR), "--mono"]
        run_quiet([*cmd, "-o", str(out_f32)])
        # Reading the result back is part of what a user pays, so it is timed too.
        return np.fromfile(out_f32, dtype="<f4")

    def ffmpeg_null(path: Path) -> None:
        # Decode only, single thread, no resample/downmix: the floor to compare against.
        run_quiet(
            ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(path)]
            + ["-f", "null", "-"]
        )

    def ffmpeg_f32le(path: Path) -> np.ndarray:
        # openai-whisper's load_audio pattern (with f32le instead of s16le).
        cmd = ["ffmpeg", "-nostdin", "-threads", "0", "-i", str(path), "-f", "f32le"]
        cmd += ["-ac", "1", "-acodec", "pcm_f32le", "-ar", str(TARGET_SR), "-"]
        return np.frombuffer(run_quiet(cmd), dtype="<f4")

    def faster_whisper(path: Path) -> np.ndarray:
        from faster_whisper import decode_audio

        return decode_audio(str(path), sampling_rate=TARGET_SR)

    def librosa_load(path: Path) -> np.ndarray:
        import librosa

        # librosa falls back to (deprecated) audioread for m4a and warns; keep output clean.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return librosa.load(str(path), sr=TARGET_SR)[0]

    def soundfile_soxr(path: Path) -> np.ndarray:
        import soundfile
        import soxr

        data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
        # Downmix before resampling: same result (both linear), half the resampler work.
        return soxr.resample(data.mean(axis=1), sr, TARGET_SR, "HQ")

    def pedalboard_soxr(path: Path) -> np.ndarray:
        import soxr
        from pedalboard.io import AudioFile

        with AudioFile(str(path)) as f:
            sr = f.samplerate
            data = f.read(f.frames)  # (channels, frames)
        return soxr.resample(data.mean(axis=0), sr, TARGET_SR, "HQ")

    return [
        Peer("audiodecode", "audiodecode", "audiodecode decode --sr 16000 --mono -o /dev/shm/x.f32 + np.fromfile", audiodecode),
        Peer("ffmpeg_null", "ff-null", "ffmpeg -threads 1 -i F -f null -  (decode only, no resample: the floor)", ffmpeg_null),
        Peer("ffmpeg_f32le", "ff-f32le", "ffmpeg -threads 0 ... -f f32le -ac 1 -ar 16000 - into numpy (whisper)", ffmpeg_f32le),
        Peer("faster_whisper", "fw", "faster_whisper.decode_audio(F, sampling_rate=16000)  (PyAV)", faster_whisper),
        Peer("librosa", "librosa", "librosa.load(F, sr=16000)  (default res_type)", librosa_load),
        Peer("soundfile_soxr", "sf+soxr", "soundfile.read + mean downmix + soxr.resample HQ", soundfile_soxr),
        Peer("pedalboard_soxr", "pb+soxr", "pedalboard.io.AudioFile.read + mean downmix + soxr.resample HQ", pedalboard_soxr),
    ]  # fmt: skip


def measure(fn: Decoder, path: Path, repeat: int) -> Measurement:
    m = Measurement()
    try:
        out = fn(path)  # warm-up: page cache, lazy imports, JIT (librosa/numba)
        for _ in range(repeat):
            # Drop the previous result and collect now, so neither its memory nor a
            # collection pause lands inside the timed region.
            out = None
            gc.collect()
            t0 = time.perf_counter()
            out = fn(path)
            m.times.append(time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - any failure means "this peer can't do it"
        m.error = f"{type(e).__name__}: {str(e).strip()}"[:300]
        return m
    if out is not None:
        m.output = np.asarray(out, dtype=np.float32).reshape(-1)
        m.samples = int(m.output.size)
    return m


# ------------------------------------------------------------------ checks


def best_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[int, float]:
    """Lag (samples, + means ``a`` is late) maximising the correlation of a and b."""
    n = min(a.size, b.size, 30 * TARGET_SR)  # 30 s is plenty to locate an offset
    x, y = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    size = 1 << int(np.ceil(np.log2(2 * n)))
    xc = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    k = int(lags[np.argmax(xc[lags])])
    if k >= 0:
        xs, ys = a[k:], b
    else:
        xs, ys = a, b[-k:]
    m = min(xs.size, ys.size)
    return k, corr(xs[:m], ys[:m])


def corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def agreement(out: np.ndarray, ref: np.ndarray) -> dict[str, object]:
    """Sample count within 1% and correlation >= 0.99 after trimming to equal length."""
    m = min(out.size, ref.size)
    count_diff = (out.size - ref.size) / max(ref.size, 1)
    r = corr(out[:m], ref[:m])
    res: dict[str, object] = {
        "samples": int(out.size),
        "ref_samples": int(ref.size),
        "count_diff": count_diff,
        "corr": r,
        "ok": abs(count_diff) <= MAX_COUNT_DIFF and r >= MIN_CORR,
    }
    if not res["ok"] and m > 0:
        # A low zero-lag correlation is usually an offset (encoder delay not trimmed).
        lag, r_lag = best_lag(out, ref, TARGET_SR // 10)
        res |= {"best_lag": lag, "corr_at_best_lag": r_lag}
    return res


def describe(chk: dict[str, object]) -> str:
    if chk["ok"]:
        return "ok"
    text = f"WARN n{float(chk['count_diff']):+.2%} r={float(chk['corr']):.3f}"
    if "best_lag" in chk:
        text += f" (r={float(chk['corr_at_best_lag']):.3f} @lag {int(chk['best_lag']):+d})"
    return text


# ------------------------------------------------------------------ part 1


def ensure_corpus(args: list[str]) -> Path:
    """Run gen_corpus.py (a no-op if the cached corpus has the same params)."""
    out = Path(args[0])
    subprocess.run([sys.executable, str(GEN_CORPUS), *args], check=True)
    return out


def fmt_s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def fmt_ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(
        h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for r in rows:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


def bench_long(a: argparse.Namespace, peers: list[Peer], report: dict[str, object]) -> bool:
    long_dir = ensure_corpus([str(a.long_dir), "--long", f"{a.seconds:g}"])
    results: dict[str, dict[str, Measurement]] = {}
    checks: dict[str, dict[str, object]] = {}
    peer_chk: dict[str, dict[str, dict[str, object]]] = {}
    for fmt in a.formats:
        path = long_dir / f"long.{fmt}"
        results[fmt] = {}
        for p in peers:
            print(f"  {fmt:5s} {p.key:16s}", end="", flush=True)
            m = measure(p.fn, path, a.repeat)
            results[fmt][p.key] = m
            print(fmt_s(m.best) if m.error is None else f"n/a ({m.error[:70]})")
        # Agreement: audiodecode vs ffmpeg f32le is the check; other peers are informative.
        ref = results[fmt].get("ffmpeg_f32le")
        if ref is not None and ref.output is not None:
            peer_chk[fmt] = {}
            for key, m in results[fmt].items():
                if m.output is None or key == "ffmpeg_f32le":
                    continue
                chk = agreement(m.output, ref.output)
                if key == "audiodecode":
                    checks[fmt] = chk
                else:
                    peer_chk[fmt][key] = chk
        for m in results[fmt].values():
            m.output = None  # free ~23 MB per peer before the next format

    keys = [p.key for p in peers]
    ad = "audiodecode" in keys
    others = [p for p in peers if p.key != "audiodecode"]
    header = ["format", *[p.header for p in peers]]
    if ad:
        header += [f"ad/{p.header}" for p in others] + ["check"]
    rows: list[list[str]] = []
    ratios: dict[str, dict[str, float | None]] = {}
    for fmt in a.formats:
        best = {k: results[fmt][k].best for k in keys}
        row = [fmt, *[fmt_s(best[k]) for k in keys]]
        if ad:
            t_ad = best["audiodecode"]
            ratios[fmt] = {
                p.key: (t_ad / best[p.key] if t_ad is not None and best[p.key] else None)
                for p in others
            }
            row += [fmt_ratio(ratios[fmt][p.key]) for p in others]
            row.append(describe(checks[fmt]) if fmt in checks else "n/a")
        rows.append(row)

    print()
    print(
        f"long.* ({a.seconds:g} s, 44.1 kHz stereo) -> {TARGET_SR} Hz mono float32 in "
        f"memory; seconds = min of {a.repeat} runs after 1 warm-up"
    )
    print_table(rows, header)
    print()
    for p in peers:
        print(f"  {p.header:>11s}  {p.doc}")
    if ad:
        print("  ad/<peer>    audiodecode time / peer time (< 1.0: audiodecode is faster)")
        print(
            f"  check        audiodecode vs ff-f32le: samples within {MAX_COUNT_DIFF:.0%}, corr >= {MIN_CORR}"
        )

    report["long"] = {
        "dir": str(long_dir),
        "seconds": a.seconds,
        "results": {
            fmt: {
                k: {
                    "times_s": m.times,
                    "min_s": m.best,
                    "samples": m.samples,
                    "error": m.error,
                }
                for k, m in per.items()
            }
            for fmt, per in results.items()
        },
        "ratios_audiodecode_over_peer": ratios,
        "checks": checks,
        "peer_agreement_vs_ffmpeg_f32le": peer_chk,
    }
    if not ad:
        return True

    # Verdicts against the README targets. Peers that can't read a format are skipped
    # (shown as n/a in the table), but audiodecode failing on a format is a FAIL; a
    # target whose reference peer was not measured is n/a rather than a vacuous PASS.
    header_of = {p.key: p.header for p in peers}
    errs = [f"{f}: audiodecode error" for f in a.formats if results[f]["audiodecode"].error]
    slow = [
        f"{fmt}/{header_of[k]}={r:.2f}"
        for fmt, per in ratios.items()
        for k, r in per.items()
        if k != "ffmpeg_null" and r is not None and r >= 1.0
    ]
    floor = [
        f"{fmt}={r:.2f}"
        for fmt, per in ratios.items()
        if (r := per.get("ffmpeg_null")) is not None and r > FLOOR_RATIO_TARGET
    ]
    disagree = [fmt for fmt, c in checks.items() if not c["ok"]]

    def verdict(measured: bool, problems: list[str], fail: str = "FAIL") -> str:
        if not measured:
            return "n/a"
        return "PASS" if not problems else f"{fail} " + ", ".join(problems)

    verdicts = {
        "faster_than_every_peer": verdict(len(others) > 0, errs + slow),
        "within_floor_ratio": verdict("ffmpeg_null" in keys, errs + floor),
        "outputs_agree": verdict(bool(checks), disagree, "WARN"),
    }
    report["long"]["verdicts"] = verdicts  # type: ignore[index]
    print()
    print("targets:")
    print(f"  faster than every peer on every format: {verdicts['faster_than_every_peer']}")
    print(
        f"  within {FLOOR_RATIO_TARGET}x of ffmpeg decode-only:      {verdicts['within_floor_ratio']}"
    )
    print(f"  output agrees with ffmpeg f32le:        {verdicts['outputs_agree']}")
    for fmt in a.formats:
        if err := results[fmt]["audiodecode"].error:
            print(f"  audiodecode failed on {fmt}: {err}")
    return not any(str(v).startswith("FAIL") for v in verdicts.values())


# ------------------------------------------------------------------ part 2


def bench_scaling(
    a: argparse.Namespace, binary: Path, scratch: Path, report: dict[str, object]
) -> bool:
    clips_dir = ensure_corpus([str(a.clips_dir), "--count", str(a.clips)])
    manifest = clips_dir / "manifest.jsonl"
    files = [json.loads(line)["audio_filepath"] for line in manifest.read_text().splitlines()]
    out_dir = scratch / f"audiodecode-scaling-{os.getpid()}"

    def run(jobs: int) -> float:
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        cmd = [str(binary), "decode", *files, "--sr", str(TARGET_SR), "--mono"]
        cmd += ["-o", f"{out_dir}/", "-j", str(jobs)]
        t0 = time.perf_counter()
        run_quiet(cmd)
        dt = time.perf_counter() - t0
        written = sum(1 for p in out_dir.iterdir() if p.is_file())
        if written != len(files):
            print(f"  warning: -j {jobs} wrote {written} files for {len(files)} inputs")
        return dt

    print(f"scaling: {len(files)} clips from {clips_dir}")
    try:
        run(2)  # warm-up: page cache and binary
        times: dict[int, list[float]] = {1: [], 2: []}
        # Interleave -j 1 and -j 2 so slow drift (thermal, background load) hits both.
        for _ in range(a.repeat):
            for jobs in (1, 2):
                times[jobs].append(run(jobs))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    t1, t2 = min(times[1]), min(times[2])
    speedup = t1 / t2
    ok = speedup >= SCALING_TARGET
    print(f"  -j 1: {t1:.3f} s   -j 2: {t2:.3f} s   speedup {speedup:.2f}x (min of {a.repeat})")
    print(f"  target >= {SCALING_TARGET}x: {'PASS' if ok else 'FAIL'}")
    report["scaling"] = {
        "dir": str(clips_dir),
        "files": len(files),
        "times_s": {"j1": times[1], "j2": times[2]},
        "speedup": speedup,
        "pass": ok,
    }
    return ok


# ------------------------------------------------------------------ main


def versions() -> dict[str, str]:
    out: dict[str, str] = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("faster_whisper", "av", "librosa", "soundfile", "soxr", "pedalboard"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception as e:  # noqa: BLE001 - report a broken install, don't fail
            out[mod] = f"unavailable ({type(e).__name__})"
    if "unavailable" not in out["soundfile"]:
        out["libsndfile"] = str(__import__("soundfile").__libsndfile_version__)
    first = run_quiet(["ffmpeg", "-version"]).decode(errors="replace").splitlines()
    out["ffmpeg"] = first[0] if first else "?"
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--seconds",
        type=float,
        default=360.0,
        help="length of the long recording (default 360)",
    )
    p.add_argument(
        "--long-dir",
        type=Path,
        help="cache dir for long.* (default ~/.cache/audiodecode/bench/long[-Ns])",
    )
    p.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help="comma-separated subset of " + ",".join(FORMATS),
    )
    p.add_argument(
        "--peers",
        help="comma-separated subset of peer keys (default: all); see --list-peers",
    )
    p.add_argument("--list-peers", action="store_true", help="print the peer keys and exit")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed runs per measurement; the minimum is reported",
    )
    p.add_argument("--json", type=Path, help="write raw numbers to this JSON file")
    p.add_argument("--scaling", action="store_true", help="also run the -j 1 vs -j 2 scaling test")
    p.add_argument("--scaling-only", action="store_true", help="run only the scaling test")
    p.add_argument("--clips", type=int, default=200, help="clips for --scaling (default 200)")
    p.add_argument("--clips-dir", type=Path, default=CACHE / "bench" / "clips")
    p.add_argument(
        "--bin",
        type=Path,
        help="audiodecode binary (default $AUDIODECODE_BIN or " + str(DEFAULT_BIN) + ")",
    )
    a = p.parse_args(argv)
    a.formats = [f.strip().lower() for f in a.formats.split(",") if f.strip()]
    if bad := sorted(set(a.formats) - set(FORMATS)):
        p.error(f"unknown format(s): {bad}")
    if a.repeat < 1:
        p.error("--repeat must be >= 1")
    if a.long_dir is None:
        # Separate cache per length, so quick --seconds runs don't evict the 360 s corpus.
        suffix = "" if a.seconds == 360 else f"-{a.seconds:g}s"
        a.long_dir = CACHE / "bench" / f"long{suffix}"
    a.scaling = a.scaling or a.scaling_only
    a.bin = a.bin or Path(os.environ.get("AUDIODECODE_BIN") or DEFAULT_BIN)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("error: ffmpeg not found on PATH", file=sys.stderr)
        return 2
    # /dev/shm keeps the audiodecode output write off the disk, as in the spec'd command.
    scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    peers = make_peers(a.bin, scratch)
    if a.list_peers:
        for peer in peers:
            print(f"{peer.key:16s} {peer.doc}")
        return 0
    if a.peers:
        wanted = [k.strip() for k in a.peers.split(",") if k.strip()]
        unknown = sorted(set(wanted) - {peer.key for peer in peers})
        if unknown:
            print(f"error: unknown peer(s) {unknown}; see --list-peers", file=sys.stderr)
            return 2
        peers = [peer for peer in peers if peer.key in wanted]
    needs_bin = a.scaling or (not a.scaling_only and any(p.key == "audiodecode" for p in peers))
    if needs_bin and not (a.bin.is_file() and os.access(a.bin, os.X_OK)):
        print(
            f"error: audiodecode binary not found (or not executable) at {a.bin}\n"
            "  build it:  CARGO_TARGET_DIR=~/.cache/audiodecode/target cargo build --release\n"
            "  or point AUDIODECODE_BIN (or --bin) at an existing build;\n"
            "  to time only the peers, pass --peers without audiodecode (see --list-peers).",
            file=sys.stderr,
        )
        return 2

    report: dict[str, object] = {
        "meta": {
            "binary": str(a.bin) if needs_bin else None,
            "repeat": a.repeat,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "versions": versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    }
    ok = True
    try:
        if not a.scaling_only:
            ok = bench_long(a, peers, report) and ok
        if a.scaling:
            print()
            ok = bench_scaling(a, a.bin, scratch, report) and ok
    finally:
        for f in scratch.glob(f"audiodecode-bench-{os.getpid()}.f32"):
            f.unlink(missing_ok=True)
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
            print(f"\nraw numbers written to {a.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
