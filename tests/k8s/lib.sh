# Shared helpers for tests/k8s/*.sh (sourced). Sets ROOT, K8S_WORK and podman's configuration.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
K8S_WORK="${PPROF_SIDECAR_K8S_WORK:-$ROOT/build-k8s-work}"
mkdir -p "$K8S_WORK"
export CONTAINERS_CONF="$ROOT/tests/k8s/containers.conf"
IMAGE="${PPROF_SIDECAR_IMAGE:-localhost/pprof-sidecar:dev}"

log() { echo "[$(date +%H:%M:%S)] $(basename "$0"): $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# Installs Debian packages that only the container tests need (not part of install-deps.sh).
ensure_debs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
  fi
}

image_exists() { podman image exists "$1"; }

# Every pod pulls and stores the image; it holds the two binaries and their libraries only.
IMAGE_MAX_BYTES=30000000
# image_size_problem IMAGE: prints why IMAGE is over IMAGE_MAX_BYTES (nothing if it is not).
image_size_problem() {
  local size
  size="$(podman image inspect --format '{{.Size}}' "$1")"
  if [ "$size" -gt "$IMAGE_MAX_BYTES" ]; then
    echo "image $1 is $size bytes ($((size / 1000000)) MB), over the $((IMAGE_MAX_BYTES / 1000000)) MB bound"
  fi
}
