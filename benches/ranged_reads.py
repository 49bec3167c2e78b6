"""Parts of a long remote recording: ranged reads against fetching the object whole.

A one-hour 16 kHz recording (or a real long file, ``--real FILE``) sits on a local S3 server
(moto, in its own process). A fresh daemon loads ``--parts`` random parts of ``--seconds``
each with ``audiodecode.load(url, offset=, duration=)``, two ways in the same run:

- ``ranged``: the object cache at 256 MB (the smallest default), so the object is over an
  eighth of it and each part is read by ranged GETs (Note [Ranged reads of remote files]);
- ``whole``: the object cache at 4 GB, so the object is fetched whole once and every part
  is read from the copy, as before the ranged reads existed.

Prints the time to the first part, the time for all parts, the S3 requests and the daemon's
memory files at the end (fetched objects). Both ways must give the same audio.

    python3 benches/ranged_reads.py                      # 1 h generated, 20 parts of 5 s
    python3 benches/ranged_reads.py --real ~/.cache/audiodecode/real-mixes/long/long_mix.wav
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shard_loading import BUCKET, memfd_kb, s3_requests, start_s3

CACHE = Path.home() / ".cache" / "audiodecode" / "bench-ranged"

# A link to a real object store, for the modelled column: the local server's bandwidth is
# free and its requests cost only its own CPU, which flatters fetching whole.
LINK_MB_S = 100.0
LINK_RTT_S = 0.03


def generated_hour() -> Path:
    """One hour of 16 kHz mono 16-bit noise under a syllable-rate envelope (115 MB)."""
    path = CACHE / "hour16k.wav"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        for _ in range(60):
            t = np.arange(16000 * 60) / 16000
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
            minute = rng.normal(0, 0.1, t.size) * envelope
            w.writeframes(np.clip(minute * 32767, -32768, 32767).astype("<i2").tobytes())
    return path


def run(way: str, url: str, parts: list[tuple[float, float]], s3: subprocess.Popen[str]) -> dict:
    import audiodecode
    from audiodecode import Daemon

    cache_bytes = 256 << 20 if way == "ranged" else 4 << 30
    before = s3_requests(s3)
    with Daemon(workers=2, object_cache_bytes=cache_bytes) as daemon:
        started = time.perf_counter()
        first = None
        audio = []
        for offset, duration in parts:
            samples, _ = audiodecode.load(url, sr=16000, offset=offset, duration=duration)
            audio.append(samples)
            first = first or time.perf_counter() - started
        total = time.perf_counter() - started
        held = memfd_kb(daemon.pid)
    after = s3_requests(s3)
    requests = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    return {
        "way": way,
        "first_part_s": first,
        "all_parts_s": total,
        "requests": requests,
        "memory_files_mb": sum(held.values()) / 1024,
        "audio": audio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", type=Path, help="a long WAV recording to use instead")
    parser.add_argument("--parts", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    path = args.real or generated_hour()
    with wave.open(str(path)) as w:
        length = w.getnframes() / w.getframerate()
    rng = random.Random(0)
    parts = [
        (round(rng.uniform(0, length - args.seconds), 3), args.seconds) for _ in range(args.parts)
    ]
    s3, info = start_s3(path.parent, [path.name], "ranged/")
    try:
        os.environ.update(info["env"])
        url = f"s3://{BUCKET}/ranged/{path.name}"
        size_mb = path.stat().st_size / 1e6
        print(f"{path} ({size_mb:.0f} MB, {length:.0f} s) on {info['endpoint']} (moto)")
        print(f"{args.parts} parts of {args.seconds} s; fresh daemon per way, 2 workers\n")
        results = [run(way, url, parts, s3) for way in ("ranged", "whole")]
    finally:
        s3.terminate()
    for a, b in zip(results[0]["audio"], results[1]["audio"], strict=True):
        np.testing.assert_array_equal(a, b)
    print(
        "| way | first part s | all parts s | GET | HEAD | MB fetched | memory files MB "
        f"| modelled s on {LINK_MB_S:.0f} MB/s, {LINK_RTT_S * 1000:.0f} ms per request |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        req = r["requests"]
        fetched_mb = req.get("GET bytes", 0) / 1e6
        requests = req.get("GET", 0) + req.get("HEAD", 0)
        modelled = requests * LINK_RTT_S + fetched_mb / LINK_MB_S
        print(
            f"| {r['way']} | {r['first_part_s']:.3f} | {r['all_parts_s']:.3f} | "
            f"{req.get('GET', 0)} | {req.get('HEAD', 0)} | {fetched_mb:.1f} | "
            f"{r['memory_files_mb']:.0f} | {modelled:.2f} |"
        )
    ranged, whole = results
    print(
        f"\nmeasured on the local server: first part {whole['first_part_s'] / ranged['first_part_s']:.2f}x, "
        f"all parts {whole['all_parts_s'] / ranged['all_parts_s']:.2f}x (ranged vs whole); same audio: yes"
    )
    if args.json:
        for r in results:
            r.pop("audio")
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
