add_library(process_symbolizer STATIC process_symbolizer.cc)
target_include_directories(process_symbolizer PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(process_symbolizer PUBLIC symbolize_elf symbolize_go symbolize_dwarf
                      absl::status absl::statusor absl::strings)

# Real targets in a chroot with hostile debug files (needs root).
add_executable(process_symbolizer_test process_symbolizer_test.cc)
target_link_libraries(process_symbolizer_test PRIVATE process_symbolizer testutil absl::time
                      GTest::gtest_main Threads::Threads)
gtest_discover_tests(process_symbolizer_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)
