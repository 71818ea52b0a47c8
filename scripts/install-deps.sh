#!/usr/bin/env bash
# Installs every build, test and demo dependency of pprof-sidecar on Debian 12 (bookworm).
# Idempotent: safe to run again; it only installs what is missing.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: must run as root (apt-get)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Go 1.21-1.23 come from bookworm-backports; the test suite builds targets with each.
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

PKGS=(
  # build
  build-essential cmake pkg-config clang llvm bpftool libbpf-dev libelf-dev libdw-dev zlib1g-dev
  libabsl-dev libgflags-dev libcpp-httplib-dev libssl-dev libprotobuf-dev protobuf-compiler
  nlohmann-json3-dev
  # tests
  libgtest-dev libgmock-dev golang-go golang-1.19-go golang-github-google-pprof-dev
  util-linux procps curl file binutils
  libjemalloc2 libtcmalloc-minimal4  # allocator libraries the malloc sampler tests probe
)
BACKPORTS=(golang-1.21-go golang-1.22-go golang-1.23-go)

missing=()
for p in "${PKGS[@]}" "${BACKPORTS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PKGS[@]}"
  apt-get install -y -qq --no-install-recommends -t bookworm-backports "${BACKPORTS[@]}"
fi
echo "install-deps.sh: all dependencies present"
