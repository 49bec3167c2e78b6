#!/usr/bin/env bash
# The main job on built-in defaults: build, generate a small labelled corpus, start the
# daemon, and train a small PyTorch classifier from it (prints throughput and the falling
# loss). Then decode the whole corpus with the CLI and print the decode throughput, and
# pseudo-label its speech clips with Whisper (default model) into a JSONL manifest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/install-deps.sh
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q "torch==2.13.0"

cargo build --release --quiet
work="$HOME/.cache/audiodecode/quickstart"
export AUDIODECODE_SOCKET="$work/daemon.sock"

"$AUDIODECODE_BIN" serve --socket "$AUDIODECODE_SOCKET"
trap '"$AUDIODECODE_BIN" stop --socket "$AUDIODECODE_SOCKET" || true' EXIT
python3 examples/train_classifier.py --corpus "$work/labeled" --steps "${STEPS:-300}"
"$AUDIODECODE_BIN" status --socket "$AUDIODECODE_SOCKET"

mapfile -t files < <(find "$work/labeled" -type f ! -name '*.json*' | sort)
rm -rf "$work/decoded"
echo "decoding ${#files[@]} files to 16 kHz mono float32 ..."
"$AUDIODECODE_BIN" decode "${files[@]}" --sr 16000 --mono -o "$work/decoded/" --format npy

# Labeling mode on the default model (offline `base`): pseudo-transcribe 24 speech clips
# into a JSONL manifest the loader can train from.
mapfile -t speech < <(python3 -c 'import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("\n".join([r["audio_filepath"] for r in rows if r["label"] == "speech"][:24]))' \
  "$work/labeled/manifest.jsonl")
echo "labeling ${#speech[@]} speech clips with Whisper base ..."
"$AUDIODECODE_BIN" label "${speech[@]}" --out "$work/labels.jsonl" --overwrite
head -n 3 "$work/labels.jsonl" | cut -c1-200
