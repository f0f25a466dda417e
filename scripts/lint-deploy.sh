#!/usr/bin/env bash
# Lints the deployment files: both Dockerfiles with hadolint; k8s/ against the Kubernetes
# 1.37 OpenAPI schemas (strict: unknown fields fail) and the KEDA ScaledObject schema.
# Usage: scripts/lint-deploy.sh [K8S_DIR] [DOCKER_DIR]   (tools come from scripts/fetch-tools.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
k8s=${1:-$root/k8s}
docker=${2:-$root/docker}
bin=$root/.tools/venv/bin
for tool in hadolint kubernetes-validate check-jsonschema; do
  [ -x "$bin/$tool" ] || { echo "lint-deploy: $bin/$tool missing: run scripts/fetch-tools.sh" >&2; exit 2; }
done

"$bin/hadolint" --failure-threshold warning "$docker/Dockerfile" "$docker/Dockerfile.cuda"

builtin=()
custom=()
for f in "$k8s"/*.yaml; do
  if grep -q '^apiVersion: keda.sh/' "$f"; then custom+=("$f"); else builtin+=("$f"); fi
done
"$bin/kubernetes-validate" --strict --quiet -k 1.37.0 "${builtin[@]}"
for f in "${custom[@]}"; do
  "$bin/check-jsonschema" --quiet --schemafile "$root/k8s/schemas/keda-scaledobject.json" "$f"
done
echo "lint-deploy: ${#builtin[@]} Kubernetes files, ${#custom[@]} KEDA files and 2 Dockerfiles pass"
