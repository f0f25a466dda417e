#!/usr/bin/env bash
# PDF output: kiln (vector pages) vs Typst on the same 100-page document — pages/s, PDF bytes,
# text extractable. Prints a markdown table; with --write also replaces the "Render: PDF
# output" section of benches/RESULTS.md. The method is described in benches/render_pdf_bench.py.
#
#   benches/render_pdf.sh [--pages N] [--rounds N] [--write]
#
# Needs target/release/kiln (cargo build --release -p kiln-worker) or KILN_BIN, the photos
# (scripts/fetch-photos.sh), poppler-utils and Typst in .tools/venv (scripts/fetch-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline="${KILN_BIN:+KILN_BIN=$KILN_BIN }benches/render_pdf.sh${*:+ $*}"
KILN=${KILN_BIN:-target/release/kiln}
[ -x "$KILN" ] || { echo "render pdf bench: $KILN is missing: run \`cargo build --release -p kiln-worker\`" >&2; exit 2; }
PY=.tools/venv/bin/python
"$PY" -c "import typst" 2>/dev/null || { echo "render pdf bench: typst is missing: run scripts/fetch-tools.sh" >&2; exit 2; }
"$PY" benches/render_pdf_bench.py --kiln "$(realpath "$KILN")" --command "$cmdline" "$@"
