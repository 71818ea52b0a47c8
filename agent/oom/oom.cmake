# The OOM flight recorder (agent/oom): the target's memory against its limit, heap snapshots at
# thresholds kept in a bounded directory, served as the "snapshots" profile kind. Pure: no BPF
# (the OOM-victim event comes from agent/sampler). Included from agent/CMakeLists.txt.
add_library(oom STATIC
  ${CMAKE_CURRENT_LIST_DIR}/memory_watch.cc
  ${CMAKE_CURRENT_LIST_DIR}/threshold_policy.cc
  ${CMAKE_CURRENT_LIST_DIR}/snapshot_store.cc
  ${CMAKE_CURRENT_LIST_DIR}/flight_recorder.cc
  ${CMAKE_CURRENT_LIST_DIR}/snapshots_source.cc)
target_include_directories(oom PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(oom PUBLIC registry symbolize_elf absl::status absl::statusor absl::strings absl::str_format
  absl::time Threads::Threads)

find_package(nlohmann_json 3 REQUIRED)  # the JSON listing is checked by a real parser
add_executable(oom_test ${CMAKE_CURRENT_LIST_DIR}/oom_test.cc)
target_link_libraries(oom_test PRIVATE oom testutil nlohmann_json::nlohmann_json GTest::gtest_main)
gtest_discover_tests(oom_test DISCOVERY_TIMEOUT 30)
