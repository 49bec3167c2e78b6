"""What the per-file damage verdict costs cropped epochs without the cache.

An item that decodes only part of its file (a crop, with the cache off) carries the whole
file's damage verdict (Note [Damage rule]): the first time the daemon meets a file longer
than the crop it decodes it whole once; later epochs only seek. Measured: epoch 1 and
epoch 2 of random 2 s crops with the cache off, and epoch 1 with the cache on (which
decodes whole files anyway), on generated clips of 2-15 s or on a directory of real files.

    python3 benches/crop_verdict.py [--clips 1000] [--real DIR]
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
AUDIO = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aiff", ".aif", ".caf", ".sph"}


def epoch(loader: AudioDataLoader) -> tuple[float, int]:
    """(wall seconds, items delivered)."""
    started = time.perf_counter()
    items = sum(len(batch.paths) for batch in loader)
    return time.perf_counter() - started, items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, default=Path.home() / ".cache/audiodecode/bench/loader"
    )
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--real", type=Path, help="a directory of real audio files instead")
    parser.add_argument("--max-seconds", type=float, default=2.0)
    args = parser.parse_args()
    if args.real:
        files = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(args.real, followlinks=True)
            for name in names
            if Path(name).suffix.lower() in AUDIO
        )
    else:
        subprocess.run(
            [sys.executable, str(REPO / "scripts/gen_corpus.py"), str(args.corpus)]
            + ["--count", str(args.clips), "--rates", "44100,48000"]
            + ["--formats", "wav,flac,mp3,ogg"],
            check=True,
        )
        manifest = (args.corpus / "manifest.jsonl").read_text().splitlines()
        files = [json.loads(line)["audio_filepath"] for line in manifest]
    common = {
        "batch_size": 32,
        "target_sr": SR,
        "max_seconds": args.max_seconds,
        "crop": "random",
        "seed": 0,
        "on_error": "skip",
    }
    with Daemon(workers=2):
        cropped = AudioDataLoader(files, cache=False, **common)
        first, items = epoch(cropped)
        second, _ = epoch(cropped)
        cropped.close()
    with Daemon(workers=2):
        cached = AudioDataLoader(files, cache=True, **common)
        with_cache, _ = epoch(cached)
        cached.close()
    print(f"{len(files)} files, {items} items delivered, crops of {args.max_seconds:g} s")
    print(f"cache off, epoch 1 (verdicts learned): {first:.2f} s, {items / first:.0f} items/s")
    print(f"cache off, epoch 2 (verdicts known):   {second:.2f} s, {items / second:.0f} items/s")
    print(f"cache on,  epoch 1 (whole decodes):    {with_cache:.2f} s")
    print(
        f"epoch 1 / epoch 2 = {first / second:.2f}x; epoch 1 / cache-on epoch 1 = "
        f"{first / with_cache:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
