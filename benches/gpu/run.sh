#!/usr/bin/env bash
# Every GPU check of kiln, in one call on a lent NVIDIA host (the device tool; see
# benches/RESULTS.md for what it printed). The host has CUDA, Python and PyTorch but no Rust,
# FFmpeg or internet, so benches/gpu/bundle.sh packs kiln, its libraries, onnxruntime-gpu, the
# model, photos and a clip into chunks under .gpu/, and each call carries one chunk:
#
#   bash benches/gpu/run.sh stage    # calls 1..N-1: keep this call's chunk in /tmp/kiln-gpu
#   bash benches/gpu/run.sh          # last call: unpack, then the checks below
#
# 1. what the host has (GPU, driver libraries, CUDA libraries) and `kiln probe` (NVML, the
#    video engines that really open — NVDEC, NVENC, scale_cuda — and ONNX Runtime's providers);
# 2. transcode: the 3-rung 1080p ladder with accel cpu vs accel gpu (NVDEC decode + scale_cuda,
#    libx264 since H100/H200 have no NVENC), alternating, plus the luma PSNR between the two
#    720p/480p outputs;
# 3. infer: benches/infer_bench.py on the CPU and on the CUDA provider (c16 and c64 rows);
# 4. kernels: kiln's CUDA kernels (kernels/src/cuda) against their CPU references on random
#    images, odd and 1-pixel sizes (the kernels crate's test binary), then kernel throughput
#    against the device's measured copy bandwidth (cuda::bench), with a cold and a warm PTX cache;
# 5. thumb: thumbnails with accel gpu (nvJPEG + CUDA resize) vs accel cpu on all the host's cores;
# 6. transcode-4k: a 10 s 4K HEVC clip (made by bundle.sh: the host has no FFmpeg) through the
#    1080/720/480 ladder, accel cpu vs gpu.
# CHECKS picks sections (default: all of "probe kernels thumb transcode transcode-4k infer-cuda
# infer-cpu"); INFER_CUDA_ARGS
# and INFER_CPU_ARGS replace infer_bench.py's row arguments. Outputs land in $OUT (the device
# tool brings them back) or /tmp/kiln-gpu/out: run.log, probe.json, kiln-logs.tar.gz.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
W=/tmp/kiln-gpu
OUTD=${OUT:-$W/out}
mkdir -p "$W/parts" "$OUTD"
for d in .gpu/c*/; do [ -d "$d" ] && cp "$d"part.* "$W/parts/"; [ -f "$d"ort-bytes ] && cp "$d"ort-bytes "$W/"; done
if [ "${1:-}" = stage ]; then ls -la "$W/parts"; exit 0; fi
exec > >(tee "$OUTD/run.log") 2>&1

echo "== unpack $(ls "$W/parts" | tr '\n' ' ')"
untar() { # reads an xz tarball on stdin into the repo root
  if command -v xz >/dev/null; then xz -T0 -dc | tar -x -C "$ROOT"
  else python3 -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall('$ROOT')"
  fi
}
if [ ! -x .gpu/bin/kiln ]; then
  cat "$W"/parts/part.* > "$W/all.bin"
  n=$(cat "$W/ort-bytes")
  head -c "$n" "$W/all.bin" | untar
  tail -c +"$((n + 1))" "$W/all.bin" | untar
  rm -f "$W/all.bin"
fi
[ -x .gpu/bin/kiln ] || { echo "bundle incomplete"; exit 1; }

echo "== host"
nvidia-smi --query-gpu=name,driver_version,memory.total,encoder.stats.sessionCount --format=csv,noheader
echo "cpus $(nproc); $(grep PRETTY /etc/os-release)"
ldconfig -p | grep -E 'libcuda\.so|libnvcuvid|libnvidia-encode|libnvidia-ml' | sed 's/^\s*/  /'
SP=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CUDA_LIBS=$(find "$SP/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
echo "CUDA libraries from $SP/nvidia: $(echo "$CUDA_LIBS" | tr ':' '\n' | wc -l) folders"
ORT_LIB=$(ls "$ROOT"/.gpu/site/onnxruntime/capi/libonnxruntime.so.* | head -n1)
cat > .gpu/kiln <<SH
#!/bin/sh
export LD_LIBRARY_PATH="$ROOT/.gpu/lib:$CUDA_LIBS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export KILN_ORT_DYLIB="$ORT_LIB"
exec "$ROOT/.gpu/bin/kiln" "\$@"
SH
chmod +x .gpu/kiln

CHECKS=${CHECKS:-probe kernels thumb transcode transcode-4k infer-cuda infer-cpu}
want() { case " $CHECKS " in *" $1 "*) return 0;; *) return 1;; esac; }
mkdir -p "$W/kiln-logs"

if want probe; then
echo "== kiln probe"
KILN_LOG=info timeout 120 .gpu/kiln probe > "$OUTD/probe.json" 2> "$W/probe.log"; echo "rc=$?"
python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1])), indent=1)[:6000])" "$OUTD/probe.json"
grep -iE 'warn|error|probe' "$W/probe.log" | cut -c1-400 | head -20
fi

if want kernels; then
echo "== kernels: CUDA vs CPU reference (cold PTX cache, then warm), then throughput"
if [ -x .gpu/bin/kernels-tests ]; then
  rm -rf "$W/ptx"
  for pass in cold warm; do
    echo "-- $pass"
    LD_LIBRARY_PATH="$ROOT/.gpu/lib:$CUDA_LIBS" KILN_CUDA_CACHE_DIR="$W/ptx" XDG_CACHE_HOME="$W/xdg-$pass" timeout 300 \
      .gpu/bin/kernels-tests cuda:: --test-threads 1 --nocapture 2>&1 | grep -vE '^test .* ok$' | tail -40
  done
  LD_LIBRARY_PATH="$ROOT/.gpu/lib:$CUDA_LIBS" timeout 300 .gpu/bin/kernels-tests cuda::bench --ignored --nocapture 2>&1 | tee "$OUTD/kernels-bench.txt" | tail -30
else
  echo "no .gpu/bin/kernels-tests in the bundle"
fi
fi

if want thumb; then
echo "== thumbnails: accel gpu vs accel cpu, $(nproc) cores, photos x ${THUMB_REPEAT:=8}"
find "$ROOT/data/mate-backgrounds" -name '*.jpg' | sort > "$W/photos.txt"
thumbs() { # accel
  local i=0 s e
  : > "$W/thumb-$1.jsonl"
  for r in $(seq "$THUMB_REPEAT"); do
    while read -r f; do
      i=$((i + 1))
      printf '{"id":"t%s-%s","kind":"thumbnail","output":"file://%s/thumb-%s/%s/","input":{"source":"file://%s","accel":"%s","outputs":[{"name":"256.jpg","width":256,"height":256,"quality":80}]}}\n' \
        "$1" "$i" "$W" "$1" "$i" "$f" "$1" >> "$W/thumb-$1.jsonl"
    done < "$W/photos.txt"
  done
  s=$(date +%s.%N)
  KILN_ACCEL=gpu KILN_STORE_URL="file://$W/store-thumb-$1/" KILN_LOG=warn timeout 600 .gpu/kiln run "$W/thumb-$1.jsonl" > "$W/thumb-$1.out" 2> "$W/thumb-$1.log"
  e=$(date +%s.%N)
  python3 - "$W/thumb-$1.out" "$s" "$e" "$1" <<'PY'
import json, sys
path, s, e, name = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rs = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
ok = sum(r.get("status") == "succeeded" for r in rs)
errs = sorted({str(r.get("error")) for r in rs if r.get("status") != "succeeded"})[:3]
print(f"thumb {name}: {ok}/{len(rs)} succeeded in {e - s:.2f} s = {ok / (e - s):.1f} images/s {errs if errs else ''}")
PY
}
thumbs cpu; thumbs gpu; thumbs cpu; thumbs gpu
grep -ihE 'warn|error' "$W"/thumb-gpu.log | cut -c1-300 | head -5
fi

if want transcode-4k; then
echo "== transcode: 10 s 4K30 HEVC -> 1080/720/480 libx264 veryfast, accel cpu vs gpu"
SRC4K=$ROOT/data/src-2160p30-hevc.mp4
for a in cpu gpu cpu gpu; do
  cat > "$W/job-4k-$a.json" <<J
{"id":"4k-$a","kind":"transcode","output":"file://$W/out-4k-$a/","input":{"source":"$SRC4K","segment_seconds":4,"accel":"$a",
 "preset":"veryfast","ladder":[{"height":1080,"bitrate_kbps":5000},{"height":720,"bitrate_kbps":3000},{"height":480,"bitrate_kbps":1500}]}}
J
  s=$(date +%s.%N)
  KILN_STORE_URL="file://$W/store-4k-$a/" KILN_LOG=warn timeout 300 .gpu/kiln run "$W/job-4k-$a.json" > "$W/result-4k-$a.json" 2> "$W/log-4k-$a.txt"
  e=$(date +%s.%N)
  python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); t=r.get('transcode',{}); print(f\"4k {sys.argv[2]}: {r['status']} {float(sys.argv[4])-float(sys.argv[3]):.2f} s, {300/(float(sys.argv[4])-float(sys.argv[3])):.1f} fps, decoder {t.get('decoder')} scalers {t.get('scalers')} {r.get('error') or ''}\")" \
    "$W/result-4k-$a.json" "$a" "$s" "$e" || echo "4k $a: no result"
done
fi

if want transcode; then
echo "== transcode: 20 s 1080p30 H.264 -> 1080/720/480 libx264 veryfast, accel cpu vs gpu"
SRC=$ROOT/data/src-1080p30.mp4
transcode() { # id accel
  cat > "$W/job-$1.json" <<J
{"id":"$1","kind":"transcode","output":"file://$W/out-$1/","input":{"source":"$SRC","segment_seconds":4,"accel":"$2",
 "preset":"veryfast","audio_bitrate_kbps":128,
 "ladder":[{"height":1080,"bitrate_kbps":5000},{"height":720,"bitrate_kbps":3000},{"height":480,"bitrate_kbps":1500}]}}
J
  local s e
  s=$(date +%s.%N)
  KILN_STORE_URL="file://$W/store-$1/" KILN_LOG=warn timeout 300 .gpu/kiln run "$W/job-$1.json" > "$W/result-$1.json" 2> "$W/log-$1.txt"
  e=$(date +%s.%N)
  python3 - "$W/result-$1.json" "$s" "$e" "$1" <<'PY'
import json, sys
path, s, e, name = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
try:
    r = json.loads(open(path).read().strip().splitlines()[-1])
except Exception as ex:
    print(f"{name}: no result ({ex})"); sys.exit(0)
t = r.get("transcode", {})
print(f"{name}: {r['status']} {e - s:.2f} s wall, {600 / (e - s):.1f} fps, decoder {t.get('decoder')}, "
      f"scalers {t.get('scalers')}, encoder {t.get('encoder')}, segments {t.get('segments')}, run_ms {t.get('run_ms', 0):.0f}"
      + ("" if r["status"] == "succeeded" else f" error {r.get('error')}"))
PY
}
for r in 1 2 3; do transcode "cpu-$r" cpu; transcode "gpu-$r" gpu; done
grep -ihE 'warn|error' "$W"/log-gpu-1.txt | cut -c1-400 | head -10
python3 - "$W/out-cpu-1" "$W/out-gpu-1" <<'PY' || true
# Luma PSNR of the GPU path's rungs against the CPU path's, frame by frame (OpenCV reads TS).
import sys, glob, math
import cv2, numpy as np
a, b = sys.argv[1:]
for rung in ("1080p", "720p", "480p"):
    def frames(d):
        out = []
        for seg in sorted(glob.glob(f"{d}/{rung}/seg-*.ts")):
            cap = cv2.VideoCapture(seg)
            while True:
                ok, f = cap.read()
                if not ok: break
                out.append(cv2.cvtColor(f, cv2.COLOR_BGR2YUV)[:, :, 0].astype(np.float64))
        return out
    fa, fb = frames(a), frames(b)
    n = min(len(fa), len(fb))
    if n == 0:
        print(f"psnr {rung}: no frames read ({len(fa)}/{len(fb)})"); continue
    ps = [10 * math.log10(255 ** 2 / max(np.mean((x - y) ** 2), 1e-9)) for x, y in zip(fa[:n], fb[:n])]
    print(f"psnr {rung} gpu vs cpu output: frames {len(fa)}/{len(fb)}, mean {np.mean(ps):.2f} dB, min {min(ps):.2f} dB")
PY

fi

bench() { # accel args...
  local accel=$1; shift
  echo "== infer: $accel ($(nproc) cores)"
  PYTHONPATH="$ROOT/.gpu/site" LD_LIBRARY_PATH="$CUDA_LIBS" PYTHONUNBUFFERED=1 timeout "${INFER_TIMEOUT:-240}" \
    python3 benches/infer_bench.py --kiln "$ROOT/.gpu/kiln" --ort-dylib "$ORT_LIB" --accel "$accel" \
    --kiln-logs "$W/kiln-logs" "$@"
  echo "rc=$?"
}
# shellcheck disable=SC2086
want infer-cuda && bench cuda ${INFER_CUDA_ARGS:---requests 640 --levels 16,64}
# shellcheck disable=SC2086
want infer-cpu && bench cpu ${INFER_CPU_ARGS:---requests 320 --instances 2,4}
tar -C "$W" -czf "$OUTD/kiln-logs.tar.gz" kiln-logs 2>/dev/null
echo "== done"
