#!/usr/bin/env bash
# kiln's fuzz targets (fuzz/, issue 22): build them with libFuzzer on the stable toolchain,
# seed their corpora, and run each for a bounded time.
#
#   bash scripts/fuzz.sh                 build, seed, run every target FUZZ_SECONDS (default 60)
#   bash scripts/fuzz.sh pdf_page ...    the same for the named targets only
#   bash scripts/fuzz.sh build|seeds     one step only
#
# Needs: the stable Rust toolchain, g++ (libfuzzer-sys compiles libFuzzer), cmake + nasm (as
# the workspace does), ffmpeg (video seeds), the tools venv (.tools/venv, onnx: model seeds)
# and ONNX Runtime's library (.tools/onnxruntime, scripts/fetch-tools.sh) for model_load.
# Prints one line per target: seconds, executions, corpus size, crashes (see fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ=$ROOT/fuzz
SECONDS_EACH=${FUZZ_SECONDS:-60}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN=$FUZZ/target/$TRIPLE/release
ALL="envelope image_jpeg image_png image_webp image_gif image_tiff progressive video_open pdf_page model_load"

build() {
  # rustc's SanitizerCoverage, as cargo-fuzz sets it up (stable -C flags only), for the
  # target only: build scripts and proc macros are built for the host without it.
  local flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
  )
  (cd "$FUZZ" && RUSTFLAGS="${flags[*]}" cargo build --release --target "$TRIPLE" --bins)
}

seed_dir() { mkdir -p "$FUZZ/corpus/$1" && echo "$FUZZ/corpus/$1"; }

seeds() {
  local d
  # Images: the generated corpus (every format, orientations, ICC, bad inputs) and a few photos.
  [ -d data/corpus/formats ] || bash scripts/make-corpus.sh >/dev/null
  for fmt in jpeg png webp gif tiff; do
    d=$(seed_dir "image_$fmt")
    find data/corpus -type f -size -400k | while read -r f; do
      case "$fmt:$(head -c 4 "$f" | od -An -tx1 | tr -d ' ')" in
        jpeg:ffd8*|png:89504e47|gif:47494638|tiff:49492a00|tiff:4d4d002a) cp "$f" "$d/" ;;
        webp:52494646) cp "$f" "$d/" ;;
      esac
    done
  done
  d=$(seed_dir progressive)
  cp "$FUZZ"/corpus/image_jpeg/* "$d/" 2>/dev/null || true
  # Envelopes: the examples and one of every kind.
  d=$(seed_dir envelope)
  local i=0
  while IFS= read -r line; do
    [ -n "$line" ] && printf '%s' "$line" >"$d/example-$((i++)).json"
  done < examples/thumbnails.jsonl
  cp examples/render.json "$d/render.json"
  printf '%s' '{"id":"t","kind":"transcode","input":{"source":"a.mp4","ladder":[{"height":720,"bitrate_kbps":3000},{"height":240,"bitrate_kbps":400}],"segment_seconds":2,"codec":"h264","accel":"cpu"},"deadline_ms":100,"priority":"batch"}' >"$d/transcode.json"
  printf '%s' '{"id":"i","kind":"infer","input":{"model":"m","images":["file:///a.jpg"]}}' >"$d/infer-images.json"
  printf '%s' '{"id":"i","kind":"infer","input":{"model":"m","tensors":[{"shape":[2,2],"data":[1,2,3,4]}]}}' >"$d/infer-tensors.json"
  printf '%s' '{"id":"r","kind":"render","input":{"format":"pdf+png","pages":[{"width":100,"height":80,"dpi":72,"background":"#ffffff","layers":[{"type":"rect","x":1,"y":2,"width":3,"height":4,"fill":"#ff000080","stroke":"#000000","stroke_width":2},{"type":"text","x":1,"y":20,"text":"hi","size":12,"color":"#000000","font":"sans"},{"type":"image","source":"a.png","x":0,"y":0,"width":10,"height":10,"opacity":0.5,"blend":"multiply","rotate":90}]},{"pdf_page":{"source":"a.pdf","page":2}}]}}' >"$d/render-all.json"
  # Videos: tiny clips in the containers kiln meets.
  d=$(seed_dir video_open)
  local spec="testsrc2=size=64x48:rate=10:duration=0.3"
  ffmpeg -v error -y -f lavfi -i "$spec" -c:v libx264 -preset ultrafast "$d/a.mp4"
  ffmpeg -v error -y -f lavfi -i "$spec" -c:v libx264 -preset ultrafast "$d/b.ts"
  ffmpeg -v error -y -f lavfi -i "$spec" -c:v libx264 -preset ultrafast "$d/c.mkv"
  ffmpeg -v error -y -f lavfi -i "$spec" -c:v libvpx -deadline realtime "$d/d.webm"
  ffmpeg -v error -y -f lavfi -i "$spec" -c:v mpeg4 "$d/e.avi"
  ffmpeg -v error -y -f lavfi -i "$spec" -c:v flv1 "$d/f.flv"
  # PDFs: hand-written ones (a page tree with inheritance, a stream, a font) and, when a
  # kiln binary is built, one kiln wrote itself (fonts, images).
  d=$(seed_dir pdf_page)
  python3 - "$d" <<'PY'
import sys
out = sys.argv[1]
def pdf(objs):
    b = bytearray(b"%PDF-1.4\n"); offs = []
    for i, o in enumerate(objs):
        offs.append(len(b)); b += f"{i+1} 0 obj\n{o}\nendobj\n".encode()
    x = len(b)
    b += f"xref\n0 {len(objs)+1}\n0000000000 65535 f \n".encode()
    for o in offs: b += f"{o:010} 00000 n \n".encode()
    b += f"trailer\n<< /Size {len(objs)+1} /Root 1 0 R >>\nstartxref\n{x}\n%%EOF\n".encode()
    return bytes(b)
c = "q 0.1 0.3 0.9 rg 20 20 200 60 re f Q BT /F1 28 Tf 30 100 Td (Hi) Tj ET"
open(f"{out}/tree.pdf", "wb").write(pdf([
    "<< /Type /Catalog /Pages 2 0 R >>",
    "<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 /MediaBox [0 0 300 200] /Resources << /Font << /F1 6 0 R >> >> >>",
    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] >>",
    "<< /Type /Page /Parent 2 0 R /Contents 5 0 R /Rotate 90 /CropBox [0 0 50 50] >>",
    f"<< /Length {len(c)} >>\nstream\n{c}\nendstream",
    "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]))
open(f"{out}/loop.pdf", "wb").write(pdf([
    "<< /Type /Catalog /Pages 2 0 R >>",
    "<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 /Parent 2 0 R >>",
    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 9 9] /Resources 4 0 R >>",
    "<< /Self 4 0 R /A [[[[1]]]] >>"]))
PY
  if [ -x target/debug/kiln ]; then
    local tmp; tmp=$(mktemp -d)
    printf '%s\n' '{"id":"seed","kind":"render","output":"file://'"$tmp"'/out/","input":{"format":"pdf","pages":[{"width":200,"height":100,"layers":[{"type":"text","x":5,"y":40,"text":"Seed åß","size":20},{"type":"rect","x":1,"y":1,"width":50,"height":20,"fill":"#ff000080"},{"type":"image","source":"'"$ROOT"'/data/corpus/formats/alpha.png","x":60,"y":10,"width":40,"height":40}]},{"pdf_page":{"source":"'"$d"'/tree.pdf","page":2}}]}}' \
      | KILN_STORE_URL="file://$tmp/store/" KILN_LOG=error target/debug/kiln run - >/dev/null || true
    cp "$tmp/out/document.pdf" "$d/kiln.pdf" 2>/dev/null || true
    rm -rf "$tmp"
  fi
  # Models: the tests' generated ONNX models.
  d=$(seed_dir model_load)
  if [ -x .tools/venv/bin/python ]; then
    .tools/venv/bin/python tests/infer/make_models.py "$d" >/dev/null
  fi
}

run_one() {
  local t=$1 art=$FUZZ/artifacts/$1 log
  mkdir -p "$art"
  log=$(mktemp)
  local before; before=$(find "$art" -type f | wc -l)
  # Bounded: total time, 10 s per input (a hang is a finding), 2 GiB RSS, 1 GiB per malloc.
  KILN_FUZZ_ORT=$ROOT/.tools/onnxruntime/libonnxruntime.so \
    "$BIN/$t" "$FUZZ/corpus/$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=1024 -max_len=262144 -print_final_stats=1 -artifact_prefix="$art/" >"$log" 2>&1 || true
  local execs; execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  local after; after=$(find "$art" -type f | wc -l)
  printf '%-12s %5ss  execs %-9s corpus %-5s new findings %s\n' "$t" "$SECONDS_EACH" "${execs:-?}" \
    "$(find "$FUZZ/corpus/$t" -type f | wc -l)" "$((after - before))"
  if [ "$after" -gt "$before" ]; then
    grep -m3 -E "panicked|ERROR: libFuzzer|SUMMARY" "$log" | sed 's/^/    /' || true
  fi
  rm -f "$log"
}

case "${1:-}" in
  build) build ;;
  seeds) seeds ;;
  *)
    targets=${*:-$ALL}
    build
    seeds
    for t in $targets; do run_one "$t"; done
    ;;
esac
