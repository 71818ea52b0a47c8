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
  build-essential cmake pkg-config clang llvm libclang-rt-14-dev bpftool libbpf-dev libelf-dev libdw-dev zlib1g-dev
  libabsl-dev libgflags-dev libcpp-httplib-dev libssl-dev libprotobuf-dev protobuf-compiler
  nlohmann-json3-dev
  # tests
  libgtest-dev libgmock-dev golang-go golang-1.19-go golang-github-google-pprof-dev
  util-linux procps curl file binutils
  libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0  # allocator libraries the malloc sampler tests probe
  libgoogle-perftools4 redis-server  # bench/native_heap_bench.sh: full tcmalloc, a real C server
  libc6-dbg   # glibc's separate (compressed) debug info: libc frames with file:line and inlines
  prometheus  # a large, dynamically linked Go server: footprint test and benchmark target
  # kernel matrix (tests/kernels): VMs, their userland, checking the kernels' archives
  qemu-system-x86 busybox-static gpgv debian-archive-keyring xz-utils
)
# ubuntu-keyring: Ubuntu's archive key, for the 5.15 kernel of the kernel matrix.
BACKPORTS=(golang-1.21-go golang-1.22-go golang-1.23-go ubuntu-keyring)

missing=()
for p in "${PKGS[@]}" "${BACKPORTS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PKGS[@]}"
  apt-get install -y -qq --no-install-recommends -t bookworm-backports "${BACKPORTS[@]}"
  # Debian starts Prometheus as a service when it is installed; the tests run their own.
  if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi
# The Go version matrix the tests build targets with (tests/testutil GoVersions()): one
# directory per minor release under $GO_MATRIX (bin/go inside). 1.19 and 1.21-1.23 are Debian's
# packages (above); the others are Go toolchains from the Go module proxy (golang.org/toolchain,
# fetched by the go command like a module; the newest patch release of each minor), unpacked in
# their own module cache under $GO_MATRIX, never on PATH. Pins: bump a patch release here; add a
# new minor here and in GoVersions().
GO_MATRIX=${PPROF_SIDECAR_GO_MATRIX:-/opt/pprof-sidecar/go}
GO_DEBIAN=(1.19 1.21 1.22 1.23)
GO_PROXY_TOOLCHAINS=(go1.20.14 go1.24.13 go1.25.14 go1.26.11 go1.27.4)
mkdir -p "$GO_MATRIX"
for v in "${GO_DEBIAN[@]}"; do
  ln -sfn "/usr/lib/go-$v" "$GO_MATRIX/$v"
done
for t in "${GO_PROXY_TOOLCHAINS[@]}"; do
  minor=$(echo "${t#go}" | cut -d. -f1,2)
  dir="$GO_MATRIX/mod/golang.org/toolchain@v0.0.1-$t.linux-amd64"
  if [ ! -x "$dir/bin/go" ] || [ "$("$dir/bin/go" env GOVERSION 2>/dev/null)" != "$t" ]; then
    echo "install-deps.sh: fetching $t from the Go module proxy"
    # Any go >= 1.21 can fetch a toolchain: GOTOOLCHAIN=<version> downloads it as a module.
    if ! env -u GOROOT GOPATH="$GO_MATRIX/gopath" GOMODCACHE="$GO_MATRIX/mod" GOFLAGS= \
        GOTOOLCHAIN="$t" GOPROXY="${GOPROXY:-https://proxy.golang.org}" \
        /usr/lib/go-1.23/bin/go version; then
      echo "install-deps.sh: could not fetch $t (the Go tests of $minor will fail)" >&2
      continue
    fi
  fi
  ln -sfn "$dir" "$GO_MATRIX/$minor"
done
echo "install-deps.sh: all dependencies present (Go matrix in $GO_MATRIX: $(ls "$GO_MATRIX" | grep -E '^1\.' | sort -V | tr '\n' ' '))"
