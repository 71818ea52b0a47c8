# Go profiles read from a Go target's runtime (agent/goprofile): goroutine, threadcreate, block,
# mutex. Pure: no BPF.
add_library(goprofile STATIC
  ${CMAKE_CURRENT_LIST_DIR}/goroutines.cc
  ${CMAKE_CURRENT_LIST_DIR}/go_stack_format.cc
  ${CMAKE_CURRENT_LIST_DIR}/goroutine_source.cc
  ${CMAKE_CURRENT_LIST_DIR}/threadcreate_source.cc
  ${CMAKE_CURRENT_LIST_DIR}/contention_source.cc)
target_include_directories(goprofile PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(goprofile PUBLIC goruntime registry location_table process_symbolizer
  pprof_encoder absl::status
  absl::statusor absl::strings absl::str_format absl::time)

# Real Go targets (oldest, newest, a stripped PIE) against their own /debug/pprof/goroutine.
# Reads another process's memory and stops its running threads briefly: root/CAP_SYS_PTRACE.
add_executable(goroutine_profile_test ${CMAKE_CURRENT_LIST_DIR}/goroutine_profile_test.cc)
target_link_libraries(goroutine_profile_test PRIVATE goprofile target testutil PkgConfig::HTTPLIB
  Threads::Threads GTest::gtest_main)
gtest_discover_tests(goroutine_profile_test DISCOVERY_TIMEOUT 60
  PROPERTIES LABELS privileged TIMEOUT 600 RUN_SERIAL TRUE)

# Runtime layouts per release against each release's DWARF; census against the symbol table.
add_executable(go_runtime_test ${CMAKE_SOURCE_DIR}/agent/goruntime/go_runtime_test.cc)
target_link_libraries(go_runtime_test PRIVATE goprofile testutil GTest::gtest_main)
gtest_discover_tests(go_runtime_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 900)

# Label sets (1.24+ slices, 1.19..1.23 maps) laid out as the runtime does, forged ones too.
add_executable(go_labels_test ${CMAKE_SOURCE_DIR}/agent/goruntime/go_labels_test.cc)
target_link_libraries(go_labels_test PRIVATE goruntime GTest::gtest_main)
gtest_discover_tests(go_labels_test DISCOVERY_TIMEOUT 60)
