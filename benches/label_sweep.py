"""Words lost per real recording: `audiodecode label` against faster-whisper 1.2.1 on every
speech file of a directory, to find the kinds of recordings where our labels lose what
faster-whisper's sequential `transcribe` (the most complete output) keeps.

Every audio file under DIR of 1–600 s (by ffprobe; byte-identical copies once) is labelled by
`audiodecode label` (one run, its defaults: VAD on, language detected), by faster-whisper's
`transcribe` (beam 5, no VAD) and by its `BatchedInferencePipeline(batch_size=8)` (VAD on);
same model (`base`), int8, same threads. For each file it counts the words of `transcribe`'s
text missing from ours and from the batched pipeline's (longest common subsequence; English
after Whisper's normalizer when `whisper-normalizer` is installed; characters for Chinese and
Japanese), and words we wrote that `transcribe` did not. Prints totals and the files where
we lose most compared with the batched pipeline; `--out FILE` keeps every row as JSONL.

    python3 benches/label_sweep.py DIR [--threads 2] [--limit N] [--out rows.jsonl]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import _checkout  # noqa: F401  (binary and client from this checkout)
from audiodecode._manifest import AUDIO_EXTENSIONS
from label_peers import english_normalizer, model_dir, read_segments, text_of, units_lost, words


def duration(path: Path) -> float | None:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
        check=False,
        capture_output=True,
        text=True,
    )
    try:
        return float(probe.stdout.split()[0])
    except (IndexError, ValueError):
        return None


def speech_files(root: Path, limit: int | None) -> list[tuple[Path, float]]:
    seen: set[str] = set()
    chosen = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        if path.suffix.lower().lstrip(".") not in AUDIO_EXTENSIONS:
            continue
        seconds = duration(path)
        if seconds is None or not 1.0 <= seconds <= 600.0:
            continue
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        chosen.append((path, seconds))
        if limit and len(chosen) >= limit:
            break
    return chosen


# Written without spaces between words: counted in characters.
SPACELESS = ("zh", "ja", "yue", "th", "lo", "my", "km", "bo")


def units(text: str, language: str, normalize) -> list[str]:
    """What is counted: characters for languages written without spaces, else words (any
    script's letters: `label_peers.words` keeps only a-z, so it found no words in Korean or
    Russian and dropped accented letters)."""
    if language in SPACELESS:
        return [c for c in text if not c.isspace() and c.isalnum()]
    if language == "en":
        return words(normalize(text) if normalize else text)
    return re.findall(r"[^\W_]+(?:'[^\W_]+)*", text.lower())


def run_ours(files: list[Path], threads: int, out: Path) -> tuple[float, dict]:
    binary = os.environ.get("AUDIODECODE_BIN", "audiodecode")
    start = time.perf_counter()
    subprocess.run(
        [binary, "label", *map(str, files), "--out", str(out), "--overwrite", "--model",
         "base", "--compute-type", "int8", "--threads", str(threads), "--quiet"],
        check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    languages = {}
    for line in out.read_text().splitlines():
        record = json.loads(line)
        languages[record["audio_filepath"]] = record.get("language")
    return elapsed, {"segments": read_segments(out), "languages": languages}


def run_faster_whisper(files: list[Path], threads: int, batched: bool) -> tuple[float, list]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    start = time.perf_counter()
    model = WhisperModel(model_dir(), device="cpu", compute_type="int8", cpu_threads=threads)
    pipeline = BatchedInferencePipeline(model)
    results = []
    for f in files:
        try:
            if batched:
                segments, info = pipeline.transcribe(str(f), batch_size=8, beam_size=5)
            else:
                segments, info = model.transcribe(str(f), beam_size=5)
            text = " ".join(s.text.strip() for s in segments)
            results.append((text, info.language))
        # PyAV's errors are ValueError/OSError subclasses: a file faster-whisper cannot read
        # is reported, not fatal.
        except (OSError, ValueError, RuntimeError) as e:
            results.append((None, f"error: {e}"))
    return time.perf_counter() - start, results


def earlier_peers(rows_path: Path, root: Path, files: list[Path]) -> tuple:
    """faster-whisper's texts from an earlier run's rows (its times are not kept: NaN)."""
    rows = {}
    for line in rows_path.read_text().splitlines():
        row = json.loads(line)
        rows[row["path"]] = row
    batched, sequential = [], []
    for f in files:
        row = rows.get(str(f.relative_to(root)))
        batched.append((row["batched"], row["language"]) if row else (None, "not in rows"))
        sequential.append((row["reference"], row["language"]) if row else (None, "not in rows"))
    return float("nan"), batched, float("nan"), sequential


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worst", type=int, default=25)
    parser.add_argument(
        "--peers-from",
        type=Path,
        help="rows of an earlier --out: reuse faster-whisper's texts and times, run only ours",
    )
    args = parser.parse_args()

    chosen = speech_files(args.root, args.limit)
    files = [p for p, _ in chosen]
    total_s = sum(s for _, s in chosen)
    print(f"{len(files)} files, {total_s:.0f} s of audio under {args.root}; base int8, "
          f"{args.threads} threads")  # fmt: skip
    if not files:
        raise SystemExit(f"no audio file of 1–600 s under {args.root} (symbolic links are skipped)")
    normalize = english_normalizer()
    with tempfile.TemporaryDirectory() as tmp:
        ours_s, ours = run_ours(files, args.threads, Path(tmp) / "labels.jsonl")
    print(f"audiodecode label: {ours_s:.1f} s")
    if args.peers_from:
        batched_s, batched, seq_s, sequential = earlier_peers(args.peers_from, args.root, files)
    else:
        batched_s, batched = run_faster_whisper(files, args.threads, batched=True)
        seq_s, sequential = run_faster_whisper(files, args.threads, batched=False)
    print(f"faster-whisper batched: {batched_s:.1f} s")
    print(f"faster-whisper transcribe: {seq_s:.1f} s")

    rows = []
    for (path, seconds), (ref_text, ref_lang), (b_text, _) in zip(chosen, sequential, batched):
        if ref_text is None:
            continue
        segments = ours["segments"].get(str(path))
        our_text = text_of(segments) if segments is not None else None
        language = ref_lang
        reference = units(ref_text, language, normalize)
        mine = units(our_text or "", language, normalize)
        theirs = units(b_text or "", language, normalize)
        rows.append({
            "path": str(path.relative_to(args.root)),
            "seconds": round(seconds, 2),
            "language": language,
            "our_language": ours["languages"].get(str(path)),
            "reference_words": len(reference),
            "ours_lost": units_lost(reference, mine),
            "batched_lost": units_lost(reference, theirs),
            "ours_extra": units_lost(mine, reference),
            "ours_failed": our_text is None,
            "reference": ref_text,
            "ours": our_text,
            "batched": b_text,
        })  # fmt: skip
    if args.out:
        args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    ref_words = sum(r["reference_words"] for r in rows)
    ours_lost = sum(r["ours_lost"] for r in rows)
    batched_lost = sum(r["batched_lost"] for r in rows)
    print(
        f"{len(rows)} files compared, {ref_words} reference words: ours lost {ours_lost} "
        f"({100 * ours_lost / max(1, ref_words):.1f} %), batched pipeline lost {batched_lost} "
        f"({100 * batched_lost / max(1, ref_words):.1f} %); ours wrote "
        f"{sum(r['ours_extra'] for r in rows)} words transcribe did not; "
        f"{sum(r['ours_failed'] for r in rows)} files without a label from us"
    )
    print(f"time: ours {ours_s:.1f} s, batched {batched_s:.1f} s, transcribe {seq_s:.1f} s")
    print("files where we lose most beyond the batched pipeline:")
    for r in sorted(rows, key=lambda r: r["batched_lost"] - r["ours_lost"])[: args.worst]:
        if r["ours_lost"] <= r["batched_lost"]:
            break
        print(f"  {r['ours_lost']:4d} vs {r['batched_lost']:4d} of {r['reference_words']:4d} "
              f"{r['language']}/{r['our_language']} {r['seconds']:7.1f} s  {r['path']}")  # fmt: skip


if __name__ == "__main__":
    main()
