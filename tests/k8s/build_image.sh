#!/usr/bin/env bash
# Builds the pprof-sidecar image (Dockerfile at the repo root) with podman, offline from image
# registries: the debian:bookworm and debian:bookworm-slim base images are made locally with
# debootstrap + `podman import`, and the build runs with --pull=never. Packages inside the build
# come from Debian's archive. Prints the image size and fails if it is over 30 MB. Root only.
#
# Env: PPROF_SIDECAR_IMAGE (tag, default localhost/pprof-sidecar:dev), DEBIAN_MIRROR,
#      PPROF_SIDECAR_K8S_WORK (cache dir, default build-k8s-work), REBUILD_BASE=1 to redo the bases.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_debs podman runc debootstrap containernetworking-plugins
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

make_bases() {
  if [ -z "${REBUILD_BASE:-}" ] && image_exists docker.io/library/debian:bookworm &&
     image_exists docker.io/library/debian:bookworm-slim; then
    log "base images present"
    return
  fi
  local rootfs="$K8S_WORK/rootfs-bookworm"
  rm -rf "$rootfs"
  log "debootstrap bookworm (minbase) from $MIRROR"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$K8S_WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$K8S_WORK/debootstrap.log"; die "debootstrap failed"; }
  # Like the official images: apt with the same archive, no package caches.
  echo "deb $MIRROR bookworm main" >"$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - docker.io/library/debian:bookworm
  # -slim: the same system without docs, man pages and locales, and dpkg told to keep it so.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - \
    docker.io/library/debian:bookworm-slim
  rm -rf "$rootfs"
}

start=$(date +%s)
make_bases
[ "${1:-}" = "--bases-only" ] && exit 0
log "building $IMAGE"
podman build --pull=never --network=host -f "$ROOT/Dockerfile" -t "$IMAGE" "$ROOT" \
  >"$K8S_WORK/build.log" 2>&1 || { tail -40 "$K8S_WORK/build.log"; die "podman build failed"; }
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE in $(($(date +%s) - start)) s; size $((size / 1000000)) MB ($size bytes)"
echo "$size" >"$K8S_WORK/image-size"
problem="$(image_size_problem "$IMAGE")"
if [ -n "$problem" ]; then
  podman image history --format '{{.Size}} {{.CreatedBy}}' "$IMAGE" >&2 || true
  die "$problem"
fi
