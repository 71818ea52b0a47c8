#!/usr/bin/env bash
# Builds pprof-sidecar and runs every test: unit, privileged (real BPF, real targets),
# end-to-end, the agent on the oldest supported kernels (booted in QEMU), Kubernetes (chart,
# capabilities, podman image, pod end-to-end), then the unit tests again under ASan/UBSan and a
# short run of every fuzzer (one clang build for both). Must run as root on Debian 12 (installs
# its own dependencies). Exits non-zero if anything failed; ends with a summary of each stage.
#
#   PPROF_SIDECAR_SKIP_KERNELS=1   skip the kernel matrix (tests/kernels: the agent in VMs)
#   PPROF_SIDECAR_SKIP_IMAGE=1     skip the podman image build and the pod end-to-end test
#   PPROF_SIDECAR_SKIP_SANITIZE=1  skip the ASan/UBSan pass
#   PPROF_SIDECAR_SKIP_FUZZ=1      skip the fuzzers
#   PPROF_SIDECAR_FUZZ_SECONDS=N   seconds per fuzzer (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
t_begin=$(date +%s)

# One line per stage for the summary at the end (CI shows only the tail of the output).
summary=()
stage_start=$t_begin
begin_stage() { stage_start=$(date +%s); echo "== $1 == $(date +%T)"; }
end_stage() {  # end_stage NAME STATUS(0 ok)
  local mark=ok; [ "$2" -eq 0 ] || mark=FAILED
  summary+=("$(printf '%-34s %-7s %5d s' "$1" "$mark" $(($(date +%s) - stage_start)))")
}

begin_stage "dependencies"
bash scripts/install-deps.sh
end_stage "dependencies" 0

begin_stage "build (Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2
end_stage "build (Release)" 0

status=0
# failed_tests DIR: the tests the last ctest run in DIR failed, one per line.
failed_tests() { cut -d: -f2- "$1/Testing/Temporary/LastTestsFailed.log" 2>/dev/null | cut -c1-100; }
# slowest_tests DIR: the last ctest run's slowest tests.
slowest_tests() {
  awk '/^[0-9]+\/[0-9]+ Testing: /{name=$3} /^Test time =/{printf "  %6.1f %s\n", $4, name}' \
    "$1/Testing/Temporary/LastTest.log" 2>/dev/null | sort -g -r | sed -n 1,8p
}
ctest_failed=""
# Unprivileged tests two at a time (those that time things are RUN_SERIAL), then the privileged
# ones (real BPF and targets, proportions of CPU time) one at a time.
begin_stage "ctest: unit tests"
rc=0; (cd build && ctest --output-on-failure --timeout 900 -LE privileged -j2) || rc=1
end_stage "ctest: unit" $rc; status=$((status | rc))
[ $rc -eq 0 ] || ctest_failed+="$(failed_tests build)"$'\n'
# One clang build with ASan/UBSan (-O1) serves the unit tests and the fuzzers (libFuzzer +ASan).
# It runs at the lowest CPU and I/O priority while the privileged tests run (they leave much of
# the machine idle: profile windows, targets on one core); it is waited for after them.
san=build-sanitize
san_pid=""
if [ -z "${PPROF_SIDECAR_SKIP_SANITIZE:-}" ] || [ -z "${PPROF_SIDECAR_SKIP_FUZZ:-}" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$san" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS_DEBUG="-g -O1" -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
    -DPPROF_SIDECAR_SANITIZE=ON -DPPROF_SIDECAR_FUZZ=ON >/dev/null
  # Every *_fuzzer target the build defines.
  fuzzers=$(cmake --build "$san" --target help | grep -oE '[a-z0-9_]+_fuzzer$' | sort -u)
  targets=()
  [ -n "${PPROF_SIDECAR_SKIP_SANITIZE:-}" ] || targets+=(unit_tests)
  [ -n "${PPROF_SIDECAR_SKIP_FUZZ:-}" ] || targets+=($fuzzers)
  echo "== ASan/UBSan build (clang) in the background, log in $san.log == $(date +%T)"
  nice -n 19 ionice -c 3 cmake --build "$san" -j2 --target "${targets[@]}" >"$san.log" 2>&1 &
  san_pid=$!
fi

begin_stage "ctest: privileged, end-to-end"
rc=0; (cd build && ctest --output-on-failure --timeout 900 -L privileged) || rc=1
end_stage "ctest: privileged, end-to-end" $rc; status=$((status | rc))
[ $rc -eq 0 ] || ctest_failed+="$(failed_tests build)"$'\n'
echo "slowest tests (s):"; slowest_tests build

# With hardware virtualization every kernel of tests/kernels/kernels.txt runs all its checks;
# under QEMU's emulation (no kvm_intel/kvm_amd: ~3 min a boot on 2 cores) the oldest supported
# kernel runs the agent at its defaults, and PPROF_SIDECAR_KERNELS=all runs the whole matrix.
if [ -z "${PPROF_SIDECAR_SKIP_KERNELS:-}" ]; then
  rc=0
  if [ "${PPROF_SIDECAR_KERNELS:-}" = all ] || [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; then
    begin_stage "kernel matrix: the agent booted on 5.10, 5.15, 6.1 (QEMU)"
    bash tests/kernels/run_vm_test.sh || rc=1
  else
    begin_stage "kernel matrix: the agent at its defaults on 5.10 (QEMU, emulated)"
    PPROF_SIDECAR_VM_RUNS=auto bash tests/kernels/run_vm_test.sh 5.10 || rc=1
  fi
  end_stage "kernels (QEMU)" $rc; status=$((status | rc))
else
  echo "== kernel matrix: SKIPPED (PPROF_SIDECAR_SKIP_KERNELS) =="
fi

begin_stage "Kubernetes delivery: chart"
rc=0; bash tests/k8s/chart_test.sh || rc=1
end_stage "chart" $rc; status=$((status | rc))
begin_stage "Kubernetes delivery: capabilities"
rc=0; bash tests/k8s/caps_test.sh || rc=1
end_stage "capabilities" $rc; status=$((status | rc))
if [ -z "${PPROF_SIDECAR_SKIP_IMAGE:-}" ]; then
  begin_stage "image (podman)"
  rc=0; bash tests/k8s/build_image.sh || rc=1
  end_stage "image" $rc; status=$((status | rc))
  if [ $rc -eq 0 ]; then
    begin_stage "pod end-to-end"
    rc=0; bash tests/k8s/pod_e2e.sh || rc=1
    end_stage "pod end-to-end" $rc; status=$((status | rc))
  fi
fi

if [ -n "$san_pid" ]; then
  begin_stage "ASan/UBSan build (clang): the rest"
  rc=0; wait "$san_pid" || rc=1
  [ $rc -eq 0 ] || tail -40 "$san.log"
  end_stage "ASan/UBSan build (after the part in the background)" $rc; status=$((status | rc))
fi

if [ -z "${PPROF_SIDECAR_SKIP_SANITIZE:-}" ]; then
  begin_stage "ASan/UBSan: unit tests"
  rc=0
  (cd "$san" && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure --timeout 900 \
    -LE privileged -E '_NOT_BUILT$' -j2) || rc=1
  end_stage "ASan/UBSan unit tests" $rc; status=$((status | rc))
  [ $rc -eq 0 ] || ctest_failed+="$(failed_tests "$san" | sed 's/^/(ASan) /')"$'\n'
  echo "slowest tests under ASan (s):"; slowest_tests "$san"
fi

if [ -z "${PPROF_SIDECAR_SKIP_FUZZ:-}" ]; then
  begin_stage "fuzzers (libFuzzer, ${PPROF_SIDECAR_FUZZ_SECONDS:-5} s each)"
  rc=0
  for f in $fuzzers; do
    bin=$(find "$san" -name "$f" -type f -executable -print -quit)
    if [ -z "$bin" ]; then echo "FUZZER NOT BUILT: $f"; rc=1; continue; fi
    corpus=$(mktemp -d)
    # Seed with real inputs so the fuzzer starts from valid structure.
    case "$f" in
      *elf*|*dwarf*|*pclntab*|*cfi*) cp /bin/true "$corpus/"; [ -f build/pprof-sidecar ] && cp build/pprof-sidecar "$corpus/" ;;
      *maps*) cp /proc/self/maps "$corpus/maps" ;;
    esac
    echo "-- $f"
    if ! "$bin" -max_total_time="${PPROF_SIDECAR_FUZZ_SECONDS:-5}" -rss_limit_mb=4096 \
        -print_final_stats=0 "$corpus" >"$san/$f.log" 2>&1; then
      echo "FUZZER FAILED: $f (see $san/$f.log)"; tail -30 "$san/$f.log"; rc=1
    fi
    rm -rf "$corpus"
  done
  end_stage "fuzzers" $rc; status=$((status | rc))
fi

echo "== done $(date +%T): $(($(date +%s) - t_begin)) s in all"
printf '%s\n' "${summary[@]}"
if [ -n "$ctest_failed" ]; then echo "failed tests:"; printf '%s' "$ctest_failed"; fi
if [ "$status" -eq 0 ]; then echo "ALL TESTS PASSED"; else echo "SOME TESTS FAILED"; fi
exit "$status"
