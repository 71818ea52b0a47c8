#!/usr/bin/env bash
# Builds the pprof-sidecar image with podman, offline from image registries. Two ways, one image:
#   host (default when build/pprof-sidecar and build/pprof-sidecar-webhook exist, as after the
#     README's build): the runtime tree is made from those binaries by deploy/make_rootfs.sh, the
#     script the Dockerfile runs, and put under the Dockerfile's own final stage. The tests of the
#     image and the pods then run the binaries the other tests ran, without compiling them again.
#   dockerfile: the Dockerfile at the repo root, whole (its compile stage included); its
#     debian:bookworm base image is made locally with debootstrap + `podman import` and the build
#     runs with --pull=never; packages inside the build come from Debian's archive.
# Prints the image size and fails if it is over 30 MB. Root only.
#
# Env: PPROF_SIDECAR_IMAGE (tag, default localhost/pprof-sidecar:dev), PPROF_SIDECAR_IMAGE_FROM
#      (host|dockerfile), DEBIAN_MIRROR, PPROF_SIDECAR_K8S_WORK (cache dir, default
#      build-k8s-work), REBUILD_BASE=1 to redo the base image.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_debs podman runc debootstrap containernetworking-plugins
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# The debian:bookworm base image of the Dockerfile's compile stage (and -slim, for other local images).
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

# The Dockerfile's final stage (FROM scratch to the end), copying the tree from a directory of
# the build context instead of the compile stage.
final_stage_from() {
  sed -n '/^FROM scratch/,$p' "$ROOT/Dockerfile" | sed "s|^COPY --from=build /out/ /|COPY $1/ /|"
}

from_host() {
  local ctx="$K8S_WORK/image-context"
  rm -rf "$ctx" && mkdir -p "$ctx"
  log "runtime tree from $ROOT/build (deploy/make_rootfs.sh)"
  sh "$ROOT/deploy/make_rootfs.sh" "$ROOT/build" "$ctx/rootfs" >"$K8S_WORK/build.log" 2>&1 ||
    { tail -40 "$K8S_WORK/build.log"; die "make_rootfs.sh failed"; }
  grep -q '^COPY --from=build /out/ /$' "$ROOT/Dockerfile" || die "Dockerfile's final stage changed"
  final_stage_from rootfs >"$ctx/Dockerfile"
  podman build --pull=never --network=none -f "$ctx/Dockerfile" -t "$IMAGE" "$ctx" \
    >>"$K8S_WORK/build.log" 2>&1 || { tail -40 "$K8S_WORK/build.log"; die "podman build failed"; }
}

from_dockerfile() {
  make_bases
  podman build --pull=never --network=host -f "$ROOT/Dockerfile" -t "$IMAGE" "$ROOT" \
    >"$K8S_WORK/build.log" 2>&1 || { tail -40 "$K8S_WORK/build.log"; die "podman build failed"; }
}

start=$(date +%s)
[ "${1:-}" = "--bases-only" ] && { make_bases; exit 0; }
from="${PPROF_SIDECAR_IMAGE_FROM:-}"
if [ -z "$from" ]; then
  from=dockerfile
  [ -x "$ROOT/build/pprof-sidecar" ] && [ -x "$ROOT/build/pprof-sidecar-webhook" ] && from=host
fi
log "building $IMAGE from the $from"
case "$from" in
  host) from_host ;;
  dockerfile) from_dockerfile ;;
  *) die "PPROF_SIDECAR_IMAGE_FROM: host or dockerfile, not $from" ;;
esac
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE ($from) in $(($(date +%s) - start)) s; size $((size / 1000000)) MB ($size bytes)"
echo "$size" >"$K8S_WORK/image-size"
problem="$(image_size_problem "$IMAGE")"
if [ -n "$problem" ]; then
  podman image history --format '{{.Size}} {{.CreatedBy}}' "$IMAGE" >&2 || true
  die "$problem"
fi
