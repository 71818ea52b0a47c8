#!/usr/bin/env bash
# Builds pprof-sidecar and runs every test: unit, privileged (real BPF, real targets),
# end-to-end, Kubernetes (chart, capabilities, podman image, pod end-to-end), then the unit
# tests again under ASan/UBSan and a short run of every fuzzer. Must run as root on Debian 12
# (installs its own dependencies). Exits non-zero if anything failed.
#
#   PPROF_SIDECAR_SKIP_IMAGE=1     skip the podman image build and the pod end-to-end test
#   PPROF_SIDECAR_SKIP_SANITIZE=1  skip the ASan/UBSan pass
#   PPROF_SIDECAR_SKIP_FUZZ=1      skip the fuzzers
#   PPROF_SIDECAR_FUZZ_SECONDS=N   seconds per fuzzer (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/install-deps.sh

echo "== build (Release) == $(date +%T)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2

status=0
echo "== ctest: all tests (unit, privileged, end-to-end) == $(date +%T)"
(cd build && ctest --output-on-failure --timeout 900) || status=1

echo "== Kubernetes delivery: chart, capabilities == $(date +%T)"
bash tests/k8s/chart_test.sh || status=1
bash tests/k8s/caps_test.sh || status=1
if [ -z "${PPROF_SIDECAR_SKIP_IMAGE:-}" ]; then
  echo "== image (podman) and pod end-to-end == $(date +%T)"
  if bash tests/k8s/build_image.sh; then bash tests/k8s/pod_e2e.sh || status=1; else status=1; fi
fi

if [ -z "${PPROF_SIDECAR_SKIP_SANITIZE:-}" ]; then
  echo "== ASan/UBSan: unit tests == $(date +%T)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPPROF_SIDECAR_SANITIZE=ON >/dev/null
  cmake --build build-asan -j2
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure --timeout 900 -LE privileged) ||
    status=1
fi

if [ -z "${PPROF_SIDECAR_SKIP_FUZZ:-}" ]; then
  echo "== fuzzers (libFuzzer, ${PPROF_SIDECAR_FUZZ_SECONDS:-20} s each) =="
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPPROF_SIDECAR_FUZZ=ON >/dev/null
  # Every *_fuzzer target the fuzz build defines.
  fuzzers=$(cmake --build build-fuzz --target help | grep -oE '[a-z0-9_]+_fuzzer$' | sort -u)
  for f in $fuzzers; do
    cmake --build build-fuzz -j2 --target "$f" >/dev/null
    corpus=$(mktemp -d)
    # Seed with real inputs so the fuzzer starts from valid structure.
    case "$f" in
      *elf*|*dwarf*|*pclntab*|*cfi*) cp /bin/true "$corpus/"; [ -f build/pprof-sidecar ] && cp build/pprof-sidecar "$corpus/" ;;
      *maps*) cp /proc/self/maps "$corpus/maps" ;;
    esac
    echo "-- $f"
    if ! "build-fuzz/$(cd build-fuzz && find . -name "$f" -type f -executable | head -1)" \
        -max_total_time="${PPROF_SIDECAR_FUZZ_SECONDS:-20}" -rss_limit_mb=4096 -print_final_stats=0 \
        "$corpus" >"build-fuzz/$f.log" 2>&1; then
      echo "FUZZER FAILED: $f (see build-fuzz/$f.log)"; tail -30 "build-fuzz/$f.log"; status=1
    fi
    rm -rf "$corpus"
  done
fi

echo "== done $(date +%T)"
if [ "$status" -eq 0 ]; then echo "ALL TESTS PASSED"; else echo "SOME TESTS FAILED"; fi
exit "$status"
