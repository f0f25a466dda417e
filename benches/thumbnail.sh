#!/usr/bin/env bash
# kiln vs vipsthumbnail: 256px thumbnails (fit inside, JPEG q80) of the mate-backgrounds photos,
# the JPEG set and the PNG set separately, pinned to 1 core and to 2 cores. Prints a markdown
# table; with --write also replaces the "Thumbnail" section of benches/RESULTS.md.
# The method is described in benches/thumbnail_bench.py.
#
#   benches/thumbnail.sh [--rounds N] [--repeat K] [--cores 1,2] [--sets jpeg,png] [--write]
#
# Needs target/release/kiln (cargo build --release -p kiln-worker) or KILN_BIN, and
# scripts/setup.sh's packages (libvips-tools, time, util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline="${KILN_BIN:+KILN_BIN=$KILN_BIN }benches/thumbnail.sh${*:+ $*}"

KILN=${KILN_BIN:-target/release/kiln}
[ -x "$KILN" ] || { echo "thumbnail bench: $KILN is missing: run \`cargo build --release -p kiln-worker\`" >&2; exit 2; }
for tool in vipsthumbnail taskset python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "thumbnail bench: $tool is missing; run scripts/setup.sh" >&2; exit 2; }
done

photos=$(mktemp)
trap 'rm -f "$photos"' EXIT
bash scripts/fetch-photos.sh --list > "$photos"

python3 benches/thumbnail_bench.py --kiln "$(realpath "$KILN")" --photos "$photos" --command "$cmdline" "$@"
