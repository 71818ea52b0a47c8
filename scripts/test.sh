#!/usr/bin/env bash
# Builds pprof-sidecar and runs every test: unit, privileged (real BPF, real targets),
# end-to-end, the agent on the oldest supported kernels (booted in QEMU), Kubernetes (chart, capabilities, podman image, pod end-to-end), then the unit
# tests again under ASan/UBSan and a short run of every fuzzer. Must run as root on Debian 12
# (installs its own dependencies). Exits non-zero if anything failed.
#
#   PPROF_SIDECAR_SKIP_KERNELS=1   skip the kernel matrix (tests/kernels: the agent in VMs)
#   PPROF_SIDECAR_SKIP_IMAGE=1     skip the podman image build and the pod end-to-end test
#   PPROF_SIDECAR_SKIP_SANITIZE=1  skip the ASan/UBSan pass
#   PPROF_SIDECAR_SKIP_FUZZ=1      skip the fuzzers
#   PPROF_SIDECAR_FUZZ_SECONDS=N   seconds per fuzzer (default 5)
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

# With hardware virtualization every kernel of tests/kernels/kernels.txt runs all its checks;
# under QEMU's emulation (no kvm_intel/kvm_amd: ~3 min a boot on 2 cores) the oldest supported
# kernel runs the agent at its defaults, and PPROF_SIDECAR_KERNELS=all runs the whole matrix.
if [ -z "${PPROF_SIDECAR_SKIP_KERNELS:-}" ]; then
  if [ "${PPROF_SIDECAR_KERNELS:-}" = all ] || [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; then
    echo "== kernel matrix: the agent booted on 5.10, 5.15, 6.1 (QEMU) == $(date +%T)"
    bash tests/kernels/run_vm_test.sh || status=1
  else
    echo "== kernel matrix: the agent at its defaults on 5.10 (QEMU, emulated) == $(date +%T)"
    PPROF_SIDECAR_VM_RUNS=auto bash tests/kernels/run_vm_test.sh 5.10 || status=1
  fi
else
  echo "== kernel matrix: SKIPPED (PPROF_SIDECAR_SKIP_KERNELS) =="
fi

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
  cmake --build build-asan -j2 --target unit_tests
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure --timeout 900 \
    -LE privileged -E '_NOT_BUILT$') ||
    status=1
fi

if [ -z "${PPROF_SIDECAR_SKIP_FUZZ:-}" ]; then
  echo "== fuzzers (libFuzzer, ${PPROF_SIDECAR_FUZZ_SECONDS:-5} s each) =="
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPPROF_SIDECAR_FUZZ=ON >/dev/null
  # Every *_fuzzer target the fuzz build defines.
  fuzzers=$(cmake --build build-fuzz --target help | grep -oE '[a-z0-9_]+_fuzzer$' | sort -u)
  for f in $fuzzers; do
    if ! cmake --build build-fuzz -j2 --target "$f" >"build-fuzz/$f.build.log" 2>&1; then
      echo "FUZZER BUILD FAILED: $f"; tail -30 "build-fuzz/$f.build.log"; status=1; continue
    fi
    corpus=$(mktemp -d)
    # Seed with real inputs so the fuzzer starts from valid structure.
    case "$f" in
      *elf*|*dwarf*|*pclntab*|*cfi*) cp /bin/true "$corpus/"; [ -f build/pprof-sidecar ] && cp build/pprof-sidecar "$corpus/" ;;
      *maps*) cp /proc/self/maps "$corpus/maps" ;;
    esac
    echo "-- $f"
    if ! "build-fuzz/$(cd build-fuzz && find . -name "$f" -type f -executable | head -1)" \
        -max_total_time="${PPROF_SIDECAR_FUZZ_SECONDS:-5}" -rss_limit_mb=4096 -print_final_stats=0 \
        "$corpus" >"build-fuzz/$f.log" 2>&1; then
      echo "FUZZER FAILED: $f (see build-fuzz/$f.log)"; tail -30 "build-fuzz/$f.log"; status=1
    fi
    rm -rf "$corpus"
  done
fi

echo "== done $(date +%T)"
if [ "$status" -eq 0 ]; then echo "ALL TESTS PASSED"; else echo "SOME TESTS FAILED"; fi
exit "$status"
