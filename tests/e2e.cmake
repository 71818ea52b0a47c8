# Privileged end-to-end tests (issue 2): the real agent binary against real targets built from
# source. Included from tests/CMakeLists.txt.
add_executable(agent_e2e_bpf_test e2e/agent_e2e_bpf_test.cc e2e/e2e_util.cc)
target_link_libraries(agent_e2e_bpf_test PRIVATE testutil PkgConfig::HTTPLIB absl::strings
                      absl::str_format absl::time GTest::gtest_main Threads::Threads)
target_compile_definitions(
  agent_e2e_bpf_test PRIVATE PPROF_SIDECAR_AGENT="$<TARGET_FILE:pprof-sidecar>"
)
add_dependencies(agent_e2e_bpf_test pprof-sidecar)
# A cold Go >= 1.20 build of the standard library takes ~40 s here; later runs hit the shared
# per-version GOCACHE of testutil.
gtest_discover_tests(agent_e2e_bpf_test DISCOVERY_TIMEOUT 60
                     PROPERTIES LABELS privileged RUN_SERIAL TRUE TIMEOUT 300)

# A controller-runtime manager built with the newest Go (modules from the Go module proxy; a cold
# build of its dependencies takes minutes), profiled by the agent and by its own pprof server.
add_executable(controller_e2e_bpf_test e2e/controller_e2e_bpf_test.cc e2e/e2e_util.cc)
target_link_libraries(controller_e2e_bpf_test PRIVATE testutil PkgConfig::HTTPLIB absl::strings
                      absl::str_format absl::time GTest::gtest_main Threads::Threads)
target_compile_definitions(
  controller_e2e_bpf_test PRIVATE PPROF_SIDECAR_AGENT="$<TARGET_FILE:pprof-sidecar>"
)
add_dependencies(controller_e2e_bpf_test pprof-sidecar)
gtest_discover_tests(controller_e2e_bpf_test DISCOVERY_TIMEOUT 60
                     PROPERTIES LABELS privileged RUN_SERIAL TRUE TIMEOUT 900)

# The agent's footprint next to real targets (issue 11): libc frames true with lazily loaded
# DWARF, memory next to Debian's Prometheus.
add_executable(footprint_e2e_bpf_test e2e/footprint_e2e_bpf_test.cc e2e/e2e_util.cc)
target_link_libraries(footprint_e2e_bpf_test PRIVATE testutil PkgConfig::HTTPLIB absl::strings
                      absl::str_format absl::time GTest::gtest_main Threads::Threads)
target_compile_definitions(
  footprint_e2e_bpf_test PRIVATE PPROF_SIDECAR_AGENT="$<TARGET_FILE:pprof-sidecar>"
)
add_dependencies(footprint_e2e_bpf_test pprof-sidecar)
gtest_discover_tests(footprint_e2e_bpf_test DISCOVERY_TIMEOUT 60
                     PROPERTIES LABELS privileged RUN_SERIAL TRUE TIMEOUT 300)

# Issue 13: hostile targets and clients against the real agent binary (privileged).
add_executable(hardening_e2e_bpf_test e2e/hardening_e2e_bpf_test.cc e2e/e2e_util.cc)
target_link_libraries(hardening_e2e_bpf_test PRIVATE testutil PkgConfig::HTTPLIB absl::strings
                      absl::str_format absl::time GTest::gtest_main Threads::Threads)
target_compile_definitions(
  hardening_e2e_bpf_test PRIVATE PPROF_SIDECAR_AGENT="$<TARGET_FILE:pprof-sidecar>"
)
add_dependencies(hardening_e2e_bpf_test pprof-sidecar)
gtest_discover_tests(hardening_e2e_bpf_test DISCOVERY_TIMEOUT 60
                     PROPERTIES LABELS privileged RUN_SERIAL TRUE TIMEOUT 300)

# Issue 16: the OOM flight recorder against real OOM kills in memory cgroups the test creates.
add_executable(oom_e2e_bpf_test e2e/oom_e2e_bpf_test.cc e2e/e2e_util.cc)
target_link_libraries(oom_e2e_bpf_test PRIVATE testutil PkgConfig::HTTPLIB absl::strings
                      absl::str_format absl::time GTest::gtest_main Threads::Threads)
target_compile_definitions(
  oom_e2e_bpf_test PRIVATE PPROF_SIDECAR_AGENT="$<TARGET_FILE:pprof-sidecar>"
)
add_dependencies(oom_e2e_bpf_test pprof-sidecar)
gtest_discover_tests(oom_e2e_bpf_test DISCOVERY_TIMEOUT 60
                     PROPERTIES LABELS privileged RUN_SERIAL TRUE TIMEOUT 300)

# Issue 17: the C allocations of Go programs (cgo) through native_heap, against Go targets built
# by the test.
add_executable(native_heap_e2e_bpf_test e2e/native_heap_e2e_bpf_test.cc e2e/e2e_util.cc)
target_link_libraries(native_heap_e2e_bpf_test PRIVATE testutil PkgConfig::HTTPLIB absl::strings
                      absl::str_format absl::time GTest::gtest_main Threads::Threads)
target_compile_definitions(
  native_heap_e2e_bpf_test PRIVATE PPROF_SIDECAR_AGENT="$<TARGET_FILE:pprof-sidecar>"
)
add_dependencies(native_heap_e2e_bpf_test pprof-sidecar)
gtest_discover_tests(native_heap_e2e_bpf_test DISCOVERY_TIMEOUT 60
                     PROPERTIES LABELS privileged RUN_SERIAL TRUE TIMEOUT 300)

# Issue 15: pprof labels on CPU samples of Go targets, against the target's own CPU profile.
add_executable(labels_e2e_bpf_test e2e/labels_e2e_bpf_test.cc e2e/e2e_util.cc)
target_link_libraries(labels_e2e_bpf_test PRIVATE testutil PkgConfig::HTTPLIB absl::strings
                      absl::str_format absl::time GTest::gtest_main Threads::Threads)
target_compile_definitions(
  labels_e2e_bpf_test PRIVATE PPROF_SIDECAR_AGENT="$<TARGET_FILE:pprof-sidecar>"
)
add_dependencies(labels_e2e_bpf_test pprof-sidecar)
gtest_discover_tests(labels_e2e_bpf_test DISCOVERY_TIMEOUT 60
                     PROPERTIES LABELS privileged RUN_SERIAL TRUE TIMEOUT 300)
