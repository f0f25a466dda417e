#!/usr/bin/env bash
# Lints the deployment files: both Dockerfiles with hadolint; every kustomize overlay under
# k8s/overlays, rendered (`kubectl kustomize`), against the Kubernetes 1.37 OpenAPI schemas
# (strict: unknown fields fail) and its KEDA ScaledObjects against the KEDA schema; the SAM
# template with cfn-lint. tests/tests/deploy_lint.rs runs this, then checks that the rendered
# settings agree with each other and pass `kiln config check`.
# Usage: scripts/lint-deploy.sh [K8S_DIR] [DOCKER_DIR] [SAM_TEMPLATE]
# (tools from scripts/fetch-tools.sh; kubectl from .tools/bin, else the one on PATH)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
k8s=${1:-$root/k8s}
docker=${2:-$root/docker}
sam=${3:-$root/deploy/sam/template.yaml}
bin=$root/.tools/venv/bin
for tool in hadolint kubernetes-validate check-jsonschema cfn-lint python; do
  [ -x "$bin/$tool" ] || { echo "lint-deploy: $bin/$tool missing: run scripts/fetch-tools.sh" >&2; exit 2; }
done
kubectl=$root/.tools/bin/kubectl
[ -x "$kubectl" ] || kubectl=$(command -v kubectl) || { echo "lint-deploy: no kubectl: run scripts/fetch-tools.sh" >&2; exit 2; }

"$bin/hadolint" --failure-threshold warning "$docker/Dockerfile" "$docker/Dockerfile.cuda"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
summary=()
for overlay in "$k8s"/overlays/*/; do
  name=$(basename "$overlay")
  "$kubectl" kustomize "$overlay" > "$tmp/$name.yaml"
  # Split: built-in kinds to one file for kubernetes-validate, each ScaledObject to its own.
  "$bin/python" "$root/scripts/yaml2json.py" < "$tmp/$name.yaml" > "$tmp/$name.json"
  "$bin/python" - "$tmp/$name.json" "$tmp/$name" <<'PY'
import json, sys, yaml
docs = json.load(open(sys.argv[1]))
out = sys.argv[2]
builtin = [d for d in docs if not d["apiVersion"].startswith("keda.sh/")]
keda = [d for d in docs if d["apiVersion"].startswith("keda.sh/")]
with open(out + "-builtin.yaml", "w") as f:
    yaml.safe_dump_all(builtin, f)
for i, d in enumerate(keda):
    json.dump(d, open(f"{out}-keda-{i}.json", "w"))
open(out + "-counts", "w").write(f"{len(builtin)} {len(keda)}\n")
PY
  "$bin/kubernetes-validate" --strict --quiet -k 1.37.0 "$tmp/$name-builtin.yaml"
  for f in "$tmp/$name"-keda-*.json; do
    [ -e "$f" ] || continue
    "$bin/check-jsonschema" --quiet --schemafile "$k8s/schemas/keda-scaledobject.json" "$f"
  done
  read -r nb nk < "$tmp/$name-counts"
  summary+=("$name: $nb objects, $nk KEDA")
done
"$bin/cfn-lint" "$sam"
joined=$(printf '%s; ' "${summary[@]}")
echo "lint-deploy: overlays (${joined%; }), 2 Dockerfiles and the SAM template pass"
