# Sourced by the scripts: one Cargo target dir outside the clone, so rebuilds (and CI runs on
# a fresh clone) are incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/audiodecode/target}"
export AUDIODECODE_BIN="${AUDIODECODE_BIN:-$CARGO_TARGET_DIR/release/audiodecode}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
