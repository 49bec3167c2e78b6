"""Cache, bucketing and tuning benchmark on the loader corpus (1,000 clips of 2-15 s).

1. Epoch throughput with the daemon's decoded-audio cache: first epoch (decodes) against
   the second (served from memory). Target: second >= 10x first.
2. Padding share of batches of 32 against duration bucketing with the same mean batch
   duration.
3. First-epoch throughput (cache off) with the daemon's own sizing and run-time tuner,
   against a sweep of fixed worker counts. Target: auto >= 95% of the best fixed count.

    python3 benches/cache_bucketing.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _checkout import REPO
from audiodecode import AudioDataLoader, Daemon

SR = 16000


def epoch(loader: AudioDataLoader) -> tuple[float, float, float]:
    """(wall seconds, audio seconds delivered, padding share)."""
    started = time.perf_counter()
    real = padded = 0
    for batch in loader:
        real += int(batch.lengths.sum())
        padded += batch.audio.shape[0] * batch.audio.shape[-1]
    return time.perf_counter() - started, real / SR, 1 - real / padded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, default=Path.home() / ".cache/audiodecode/bench/loader"
    )
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    subprocess.run(
        [sys.executable, str(REPO / "scripts/gen_corpus.py"), str(args.corpus)]
        + ["--count", str(args.clips), "--rates", "44100,48000", "--formats", "wav,flac,mp3,ogg"],
        check=True,
    )
    rows = [json.loads(line) for line in (args.corpus / "manifest.jsonl").read_text().splitlines()]
    files = [r["audio_filepath"] for r in rows]
    mean_s = sum(r["duration"] for r in rows) / len(rows)

    with Daemon(workers=2) as daemon:
        loader = AudioDataLoader(files, batch_size=32, target_sr=SR, cache=True, seed=0)
        first = epoch(loader)
        second = epoch(loader)
        status = daemon.status()
        loader.close()
        budget = 32 * mean_s
        bucketed = AudioDataLoader(files, max_batch_seconds=budget, target_sr=SR, seed=0)
        buckets = epoch(bucketed)
        n_buckets = len(bucketed)
        bucketed.close()

    sweep = {}
    for workers in range(1, (os.cpu_count() or 2) + 2):
        with Daemon(workers=workers, min_workers=workers, max_workers=workers):
            loader = AudioDataLoader(files, batch_size=32, target_sr=SR, cache=False, seed=0)
            t, audio, _ = epoch(loader)
            sweep[workers] = audio / t
            loader.close()
    with Daemon() as daemon:  # the daemon's own sizing and tuner
        loader = AudioDataLoader(files, batch_size=32, target_sr=SR, cache=False, seed=0)
        t, audio, _ = epoch(loader)
        auto = audio / t
        tuned = daemon.status()
        loader.close()
    best = max(sweep, key=sweep.__getitem__)

    speedup = first[0] / second[0]
    print(f"epoch 1 (decoding): {first[0]:.2f} s, {first[1] / first[0]:.0f} audio s/s")
    print(f"epoch 2 (cache):    {second[0]:.2f} s, {second[1] / second[0]:.0f} audio s/s")
    print(f"cache speedup {speedup:.1f}x (target >= 10x); cache {status.cache_bytes >> 20} MB, ")
    print(f"  {status.cache_hits} hits, {status.cache_misses} misses, {status.decodes} decodes")
    print(
        f"padding share: batches of 32 {100 * first[2]:.1f}% "
        f"({len(files) // 32 + 1} batches); bucketed at {budget:.0f} s "
        f"{100 * buckets[2]:.1f}% ({n_buckets} batches)"
    )
    print(
        "fixed workers: "
        + ", ".join(f"{w}: {v:.0f} audio s/s" for w, v in sweep.items())
        + f"; auto: {auto:.0f} audio s/s ({tuned.workers} workers at the end, "
        + f"bounds {tuned.min_workers}..{tuned.max_workers}) = "
        + f"{100 * auto / sweep[best]:.0f}% of the best (target >= 95%)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "first": first,
                    "second": second,
                    "speedup": speedup,
                    "bucketed": buckets,
                    "budget_s": budget,
                    "bucketed_batches": n_buckets,
                    "sweep": sweep,
                    "auto": auto,
                    "auto_final_workers": tuned.workers,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
