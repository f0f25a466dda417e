#!/usr/bin/env bash
# Packs what benches/gpu/run.sh needs on a GPU host that has CUDA and Python but no Rust, no
# FFmpeg and no internet: the stripped kiln binary with the shared libraries it links (Debian
# 12's FFmpeg and their dependencies, glibc and libstdc++ left to the host), the
# onnxruntime-gpu wheel's package (the C library kiln loads, its CUDA provider, the Python
# module of the baseline), the detector model, the photos and a generated 1080p30 clip.
#
#   bash benches/gpu/bundle.sh [CHUNK_MIB=60]
#
# Output: .gpu/c1/part.00, .gpu/c2/part.01, … (git-ignored): two xz tarballs (onnxruntime-gpu,
# then the rest) back to back, cut into chunks each small enough to travel with one device call
# (the device tool carries 64 MiB a call); .gpu/c1/ort-bytes says where the first one ends.
# Needs `make fixtures`, `cargo build --release -p kiln-worker` and the kernels' test binary
# (`cargo test --release --workspace --features kiln-worker/debug-kind --lib --no-run`) first.
set -euo pipefail
cd "$(dirname "$0")/../.."
CHUNK=${1:-60}
ORT_VERSION=1.31.1
STAGE=.gpu/stage
mkdir -p .gpu

# onnxruntime-gpu (CUDA 13 build): the whole Python package, less the TensorRT provider. Kept
# between runs (it does not change with kiln), in its own xz stream.
if [ ! -s .gpu/ort.tar.xz ]; then
  mkdir -p .tools/wheels "$STAGE-ort/.gpu/site"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 -d .tools/wheels "onnxruntime-gpu==$ORT_VERSION"
  whl=$(ls .tools/wheels/onnxruntime_gpu-"$ORT_VERSION"-cp312-*.whl | head -n1)
  python3 - "$whl" "$STAGE-ort/.gpu/site" <<'PY'
import sys, zipfile
whl, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("onnxruntime/") and "tensorrt" not in n:
            z.extract(n, dest)
PY
  tar -C "$STAGE-ort" -cf - . | xz -T2 -6 -c > .gpu/ort.tar.xz.tmp && mv .gpu/ort.tar.xz.tmp .gpu/ort.tar.xz
  rm -rf "$STAGE-ort"
fi

# kiln, the libraries it links (less the C runtime the host's newer glibc/libstdc++ provide),
# the model, the photos infer_bench.py uses and the transcode source.
rm -rf "$STAGE" .gpu/c* .gpu/kiln.tar.xz
mkdir -p "$STAGE/.gpu/lib" "$STAGE/.gpu/bin" "$STAGE/.tools/models" "$STAGE/data"
strip -o "$STAGE/.gpu/bin/kiln" target/release/kiln
# FFmpeg is loaded on first use (kernels/build.rs), so ldd of kiln no longer lists it: its five
# libraries (by soname, as dlopen asks for them) and what they link are added here.
ffmpeg_libs() {
  for l in avutil swresample swscale avcodec avformat; do
    dev="$(pkg-config --variable=libdir "lib$l")/lib$l.so"
    so="$(dirname "$dev")/$(objdump -p "$dev" | awk '/SONAME/ {print $2}')"
    echo "lib$l => $so (0)"
    ldd "$so"
  done
}
{ ldd target/release/kiln; ffmpeg_libs; } | awk '/=>/ {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux-x86-64)\.so' |
  while read -r lib; do cp -L "$lib" "$STAGE/.gpu/lib/"; done
# The kernels crate's test binary: the CUDA agreement tests and cuda::bench (run.sh "kernels").
kt=$(cargo test --release --workspace --features kiln-worker/debug-kind --lib --no-run --message-format=json 2>/dev/null |
  python3 -c 'import sys, json
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "kiln_kernels" and m.get("executable"): print(m["executable"])' | tail -n1)
if [ -n "$kt" ]; then strip -o "$STAGE/.gpu/bin/kernels-tests" "$kt"; else echo "bundle: no kernels test binary"; fi
cp .tools/models/320n.onnx "$STAGE/.tools/models/"
find data/mate-backgrounds -name '*.jpg' -size -3000k -print0 | xargs -0 cp --parents -t "$STAGE"
# 20 s of 1080p30 moving test pattern + a tone, H.264/AAC.
ffmpeg -v error -y -f lavfi -i "testsrc2=size=1920x1080:rate=30:duration=20" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=20" \
  -c:v libx264 -preset veryfast -b:v 4000k -pix_fmt yuv420p -c:a aac -b:a 128k -shortest "$STAGE/data/src-1080p30.mp4"
# 10 s of 4K30 HEVC for run.sh's transcode-4k (the GPU host has no FFmpeg to make it).
ffmpeg -v error -y -f lavfi -i "testsrc2=size=3840x2160:rate=30:duration=10" \
  -c:v libx265 -preset ultrafast -b:v 12000k -pix_fmt yuv420p -tag:v hvc1 -x265-params log-level=error "$STAGE/data/src-2160p30-hevc.mp4"
du -sh "$STAGE"
tar -C "$STAGE" -cf - . | xz -T2 -6 -c > .gpu/kiln.tar.xz
rm -rf "$STAGE"

# Both streams back to back, cut into chunks; the manifest says where the first one ends.
cat .gpu/ort.tar.xz .gpu/kiln.tar.xz | split -b "${CHUNK}M" -d -a 2 - .gpu/part.
i=1
for p in .gpu/part.*; do mkdir -p ".gpu/c$i" && mv "$p" ".gpu/c$i/"; i=$((i + 1)); done
stat -c %s .gpu/ort.tar.xz > .gpu/c1/ort-bytes
ls -la .gpu/c*/
