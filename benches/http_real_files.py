"""Robustness of the HTTP service on real files: posts a seeded sample of a directory of
real audio (a few files per top-level folder, i.e. per source project) to
`/v1/audio/transcriptions` from several clients at once. Every answer must be a 200 or a
4xx in OpenAI's error shape whose message names the uploaded file; no 5xx, no hang, and
`/health` answers afterwards. Prints the statuses and each refusal's reason.

    python3 benches/http_real_files.py --real ~/.cache/audiodecode/real-audio \
        [--per-source 6] [--clients 4] [--model tiny.en] [--max-mb 3] [--seed 7]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _checkout  # noqa: F401  (binary and client from this checkout)
import requests
from audiodecode import serve_http

NOT_AUDIO = {".md", ".txt", ".tsv", ".json", ".py"}


def sample_files(root: Path, per_source: int, max_bytes: int, seed: int) -> list[Path]:
    """Up to `per_source` files of each top-level folder, seeded."""
    by_source: dict[str, list[Path]] = collections.defaultdict(list)
    for path in sorted(root.rglob("*")):
        wanted = path.is_file() and path.suffix.lower() not in NOT_AUDIO
        if wanted and path.stat().st_size <= max_bytes:
            by_source[path.relative_to(root).parts[0]].append(path)
    rng = random.Random(seed)
    return [p for ps in by_source.values() for p in rng.sample(ps, min(per_source, len(ps)))]


def post(url: str, path: Path) -> tuple[Path, int, str]:
    with open(path, "rb") as f:
        answer = requests.post(
            f"{url}/v1/audio/transcriptions",
            files={"file": (path.name, f)},
            data={"model": "whisper-1"},
            timeout=600,
        )
    return path, answer.status_code, answer.text


def refusal_reason(status: int, body: str, name: str) -> str | None:
    """The error message of a well-formed refusal naming `name`; None otherwise."""
    if status >= 500:
        return None
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None
    return message if name in message else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, required=True, help="directory of real audio")
    parser.add_argument("--per-source", type=int, default=6)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-mb", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    files = sample_files(args.real, args.per_source, int(args.max_mb * 2**20), args.seed)
    print(f"{len(files)} files from {args.real}", flush=True)
    service = serve_http(
        "127.0.0.1:0",
        model=args.model,
        threads=args.threads,
        max_upload_mb=max(4, int(args.max_mb) + 1),
        max_audio_s=600,
    )
    statuses: collections.Counter[int] = collections.Counter()
    wrong: list[str] = []
    health = 0
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(args.clients) as pool:
            for path, status, body in pool.map(lambda p: post(service.http_url, p), files):
                statuses[status] += 1
                if status == 200:
                    continue
                reason = refusal_reason(status, body, path.name)
                if reason is None:
                    wrong.append(f"{path}: {status} {body[:300]}")
                else:
                    print(f"{status} {reason[:200]}")
        health = requests.get(f"{service.http_url}/health", timeout=10).status_code
    finally:
        service.close()
    elapsed = time.monotonic() - started
    print(f"statuses {dict(sorted(statuses.items()))} in {elapsed:.0f} s; /health {health}")
    for line in wrong:
        print(f"NOT A CLEAR REFUSAL: {line}")
    return 0 if not wrong and health == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
