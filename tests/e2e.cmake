# Privileged end-to-end tests (issue 2): the real agent binary against real targets built from
# source. Included from tests/CMakeLists.txt.

# The helpers every end-to-end test shares (the agent and targets as child processes, HTTP).
add_library(e2e_util STATIC e2e/e2e_util.cc)
target_link_libraries(e2e_util PUBLIC testutil PkgConfig::HTTPLIB absl::strings absl::str_format
                      absl::time GTest::gtest Threads::Threads)
target_compile_definitions(e2e_util PUBLIC PPROF_SIDECAR_AGENT="$<TARGET_FILE:pprof-sidecar>")

# pprof_sidecar_e2e_test(NAME TIMEOUT): e2e/NAME.cc against the agent binary, labelled
# privileged, run alone (they measure CPU time), each test bounded by TIMEOUT seconds.
function(pprof_sidecar_e2e_test name timeout)
  add_executable(${name} e2e/${name}.cc)
  target_link_libraries(${name} PRIVATE e2e_util GTest::gtest_main)
  add_dependencies(${name} pprof-sidecar)
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60
                       PROPERTIES LABELS privileged RUN_SERIAL TRUE TIMEOUT ${timeout})
endfunction()

pprof_sidecar_e2e_test(agent_e2e_bpf_test 300)

# A controller-runtime manager built with the newest Go (modules from the Go module proxy; a cold
# build of its dependencies takes minutes), profiled by the agent and by its own pprof server.
pprof_sidecar_e2e_test(controller_e2e_bpf_test 900)

# The agent's footprint next to real targets (issue 11): libc frames true with lazily loaded
# DWARF, memory next to Debian's Prometheus.
pprof_sidecar_e2e_test(footprint_e2e_bpf_test 300)

# Issue 13: hostile targets and clients against the real agent binary (privileged).
pprof_sidecar_e2e_test(hardening_e2e_bpf_test 300)

# Issue 16: the OOM flight recorder against real OOM kills in memory cgroups the test creates.
pprof_sidecar_e2e_test(oom_e2e_bpf_test 300)

# Issue 17: the C allocations of Go programs (cgo) through native_heap, against Go targets built
# by the test.
pprof_sidecar_e2e_test(native_heap_e2e_bpf_test 300)

# Issue 15: pprof labels on CPU samples of Go targets, against the target's own CPU profile.
pprof_sidecar_e2e_test(labels_e2e_bpf_test 300)
