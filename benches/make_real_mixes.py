"""Real-speech benchmark sets for `label_peers.py --real`, made from a directory of real
recordings you fetched (public projects' test data; never commit them).

Writes into OUT:
  long/long_mix.wav        real speech recordings back to back (~5-6 min)
  repetitive/loop.wav      one real utterance looped (a repeated announcement), ~6 min
  clips/*.wav              real clips of 2-15 s, as they are
  mixed/*.wav              real speech between music, noise, tones and silence: mixed.wav
                           (four recordings), mixed_apollo.wav (radio speech and read
                           LibriSpeech between music, a whale, a dog and dishes),
                           mixed_short.wav (twelve read sentences, a few seconds of
                           non-speech between each), with
  mixed/regions.json       where the speech is, by file ({name: [[start, end], ...]})
and SOURCES.txt naming every file used. Inputs are picked by name from SOURCE (paths
relative to it); see --help for the defaults, which match the cache described in
benches/README.md.

    python3 benches/make_real_mixes.py SOURCE OUT
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

LONG = [
    "snakers4__silero-vad/examples/c++/aepyx_8k.wav",
    "snakers4__silero-vad/tests/data/test.wav",
    "pyannote__pyannote-audio/src/pyannote/audio/sample/sample.wav",
    "SYSTRAN__faster-whisper/tests/data/jfk.flac",
    "Picovoice__leopard/resources/audio_samples/diarization_test.wav",
    "Picovoice__porcupine/resources/audio_samples/multiple_keywords.wav",
    "lhotse-speech__lhotse/test/fixtures/libri/libri-1088-134315-0000.wav",
]
REPEATED = "SYSTRAN__faster-whisper/tests/data/jfk.flac"
CLIP_DIRS = [
    "coqui-ai__TTS/tests/data/ljspeech/wavs",
    "lhotse-speech__lhotse/test/fixtures",
    "Uberi__speech_recognition/examples",
    "Picovoice__leopard/resources/audio_samples",
    "speechbrain__speechbrain/tests/samples/single-mic",
    "alphacep__vosk-api/python/example",
    "ggerganov__whisper.cpp/samples",
]
SPEECH_FOR_MIX = [
    "pyannote__pyannote-audio/src/pyannote/audio/sample/sample.wav",
    "SYSTRAN__faster-whisper/tests/data/jfk.flac",
    "snakers4__silero-vad/tests/data/test.wav",
    "Picovoice__leopard/resources/audio_samples/diarization_test.wav",
]
NON_SPEECH = [
    "LCAV__pyroomacoustics/examples/samples/guitar_16k.wav",
    "speechbrain__speechbrain/tests/samples/noise/noise1.wav",
    "LCAV__pyroomacoustics/notebooks/exercise_bike.wav",
]
# More speech among non-speech, so that words kept are counted over more than one mix.
SPEECH_FOR_APOLLO_MIX = [
    "linto-ai__whisper-timestamped/tests/data/apollo11.mp3",
    "librosa__data/audio/198-209-0000.ogg",
    "librosa__data/audio/5703-47212-0000.ogg",
    "librosa__data/audio/3436-172162-0000.ogg",
    "mozilla__DeepSpeech/data/smoke_test/new-home-in-the-stars-16k.wav",
]
NON_SPEECH_FOR_APOLLO_MIX = [
    "librosa__data/audio/Kevin_MacLeod_-_Vibe_Ace.ogg",
    "librosa__data/audio/glacier-bay-humpback.ogg",
    "LCAV__pyroomacoustics/examples/input_samples/doing_the_dishes.wav",
    "librosa__data/audio/pibble.ogg",
    "librosa__data/audio/147793__setuniman__sweet-waltz-0i-22mi.ogg",
]
SPEECH_FOR_SHORT_MIX = [
    f"coqui-ai__TTS/tests/data/ljspeech/wavs/LJ001-{n:04d}.flac" for n in range(21, 33)
]
NON_SPEECH_FOR_SHORT_MIX = [
    "librosa__data/audio/442789__lena-orsa__happy-music-pistachio-ice-cream-ragtime.ogg",
    "LCAV__pyroomacoustics/notebooks/exercise_bike.wav",
    "librosa__data/audio/Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy.ogg",
]
RATE = 16000


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def to_wav(src: Path, out: Path, seconds: float | None = None) -> None:
    limit = ["-t", str(seconds)] if seconds else []
    ffmpeg("-i", str(src), *limit, "-ac", "1", "-ar", str(RATE), "-c:a", "pcm_s16le", str(out))


def duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout)


def concat(parts: list[Path], out: Path) -> None:
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{p.resolve()}'\n" for p in parts))
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out))
    listing.unlink()


def interleave(
    speech: list[Path], fillers: list[Path], per_gap: int, out: Path
) -> list[list[float]]:
    """``out``: before each speech file ``per_gap`` fillers (taken in turn, the i-th speech
    file starting at filler i), then the speech; the speech regions, in seconds."""
    regions, parts, t = [], [], 0.0
    for i, part in enumerate(speech):
        for k in range(per_gap):
            filler = fillers[(i + k * 2) % len(fillers)]
            parts.append(filler)
            t += duration(filler)
        parts.append(part)
        d = duration(part)
        regions.append([round(t, 3), round(t + d, 3)])
        t += d
    parts.append(fillers[-1])
    concat(parts, out)
    return regions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--only-mixed", action="store_true", help="write only mixed/ (the other sets as they are)"
    )
    args = parser.parse_args()
    src, out = args.source, args.out
    work = out / "work"
    for d in ("long", "repetitive", "clips", "mixed", "work"):
        (out / d).mkdir(parents=True, exist_ok=True)
    used: list[str] = []
    if not args.only_mixed:
        used += write_long_repetitive_clips(src, out, work)
    used += write_mixes(src, out, work)
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    sources = out / "SOURCES.txt"
    if args.only_mixed and sources.exists():
        used = sources.read_text().split() + used
    sources.write_text("\n".join(dict.fromkeys(used)) + "\n")
    print(
        f"{out}: "
        + ", ".join(
            f"{f.name} {duration(f):.0f} s"
            for f in sorted(out.glob("*/*.wav"))
            if f.parent.name != "clips"
        )
    )


def write_long_repetitive_clips(src: Path, out: Path, work: Path) -> list[str]:
    used = []
    parts = []
    for i, name in enumerate(LONG):
        part = work / f"long{i}.wav"
        to_wav(src / name, part)
        parts.append(part)
        used.append(name)
    concat(parts, out / "long" / "long_mix.wav")

    once = work / "once.wav"
    to_wav(src / REPEATED, once)
    concat([once] * 33, out / "repetitive" / "loop.wav")
    used.append(REPEATED)

    count = 0
    seen: set[tuple[str, str, float]] = set()
    seen_lengths: set[tuple[str, float]] = set()
    for d in CLIP_DIRS:
        for f in sorted((src / d).rglob("*")):
            if f.suffix.lower() not in (".wav", ".flac", ".mp3") or count >= 60:
                continue
            try:
                seconds = duration(f)
            except (subprocess.CalledProcessError, ValueError):
                continue
            # Test data often holds one utterance in several formats: keep one of each.
            key = (d, f.stem.split(".")[0], round(seconds, 1))
            if key in seen or (d, round(seconds, 1)) in seen_lengths:
                continue
            seen.add(key)
            seen_lengths.add((d, round(seconds, 1)))
            if 2.0 <= seconds <= 15.0 and "rvb" not in f.name and "noise" not in f.name:
                to_wav(f, out / "clips" / f"clip{count:03d}.wav")
                used.append(str(f.relative_to(src)))
                count += 1
    return used


def write_mixes(src: Path, out: Path, work: Path) -> list[str]:
    used = []
    silence = work / "silence.wav"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"anullsrc=r={RATE}:cl=mono",
        "-t",
        "8",
        "-c:a",
        "pcm_s16le",
        str(silence),
    )
    fillers = []
    for i, name in enumerate(NON_SPEECH):
        filler = work / f"filler{i}.wav"
        to_wav(src / name, filler, seconds=12)
        fillers.append(filler)
        used.append(name)
    tone = work / "tone.wav"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"sine=f=440:r={RATE}",
        "-t",
        "6",
        "-af",
        "volume=0.3",
        "-c:a",
        "pcm_s16le",
        str(tone),
    )
    fillers += [tone, silence]

    def converted(names: list[str], stem: str, seconds: float | None = None) -> list[Path]:
        paths = []
        for i, name in enumerate(names):
            path = work / f"{stem}{i}.wav"
            to_wav(src / name, path, seconds)
            used.append(name)
            paths.append(path)
        return paths

    regions = {
        "mixed.wav": interleave(
            converted(SPEECH_FOR_MIX, "speech"), fillers, 2, out / "mixed" / "mixed.wav"
        ),
        "mixed_apollo.wav": interleave(
            converted(SPEECH_FOR_APOLLO_MIX, "apollo"),
            converted(NON_SPEECH_FOR_APOLLO_MIX, "apollo_filler", seconds=10) + [silence],
            2,
            out / "mixed" / "mixed_apollo.wav",
        ),
        "mixed_short.wav": interleave(
            converted(SPEECH_FOR_SHORT_MIX, "short"),
            converted(NON_SPEECH_FOR_SHORT_MIX, "short_filler", seconds=4),
            1,
            out / "mixed" / "mixed_short.wav",
        ),
    }
    (out / "mixed" / "regions.json").write_text(json.dumps(regions))
    return used


if __name__ == "__main__":
    main()
