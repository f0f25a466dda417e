#!/usr/bin/env bash
# Render throughput: a 100-page document (photo + text layers per page), the CPU compositor vs
# the wgpu compositor (Mesa's lavapipe on a CPU machine, Vulkan on a GPU node). Prints a
# markdown table; with --write also replaces the "Render" section of benches/RESULTS.md.
# The method is described in benches/render_bench.py.
#
#   benches/render.sh [--pages N] [--rounds N] [--backends cpu,gpu] [--label lavapipe] [--write] [--samples FILE]
#
# Needs target/release/kiln (cargo build --release -p kiln-worker) or KILN_BIN, the photos
# (scripts/fetch-photos.sh) and scripts/setup.sh's packages (mesa-vulkan-drivers, fonts).
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline="${KILN_BIN:+KILN_BIN=$KILN_BIN }benches/render.sh${*:+ $*}"
KILN=${KILN_BIN:-target/release/kiln}
[ -x "$KILN" ] || { echo "render bench: $KILN is missing: run \`cargo build --release -p kiln-worker\`" >&2; exit 2; }
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
python3 benches/render_bench.py --kiln "$(realpath "$KILN")" --command "$cmdline" "$@"
