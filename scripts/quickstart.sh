#!/usr/bin/env bash
# The main job on built-in defaults: build, generate a small mixed-format corpus, decode all
# of it to 16 kHz mono float32 with a progress bar, and print the throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/install-deps.sh

cargo build --release --quiet
work="$HOME/.cache/audiodecode/quickstart"
python3 scripts/gen_corpus.py "$work/corpus" --count "${CLIPS:-200}"

mapfile -t files < <(find "$work/corpus" -type f ! -name '*.json*' | sort)
rm -rf "$work/decoded"
echo "decoding ${#files[@]} files to 16 kHz mono float32 ..."
"$AUDIODECODE_BIN" decode "${files[@]}" --sr 16000 --mono -o "$work/decoded/" --format npy
