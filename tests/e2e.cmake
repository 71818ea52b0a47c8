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
