# Go runtime symbol table (.gopclntab) reader.
add_library(symbolize_go STATIC ${CMAKE_CURRENT_LIST_DIR}/go_pclntab.cc
  ${CMAKE_CURRENT_LIST_DIR}/go_code.cc ${CMAKE_CURRENT_LIST_DIR}/go_buildinfo.cc
  ${CMAKE_CURRENT_LIST_DIR}/x86_decode.cc)
target_include_directories(symbolize_go PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(symbolize_go PUBLIC symbolize_elf absl::status absl::statusor absl::strings
  absl::str_format)

add_executable(go_pclntab_test ${CMAKE_CURRENT_LIST_DIR}/go_pclntab_test.cc)
target_link_libraries(go_pclntab_test PRIVATE symbolize_go testutil GTest::gtest_main)
# Each case builds a Go program from source (several seconds each).
gtest_discover_tests(go_pclntab_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)

if(PPROF_SIDECAR_FUZZ)
  # The parser is compiled into the fuzzer so it gets coverage instrumentation.
  add_executable(go_pclntab_fuzzer ${CMAKE_CURRENT_LIST_DIR}/go_pclntab_fuzzer.cc
    ${CMAKE_CURRENT_LIST_DIR}/go_pclntab.cc)
  target_include_directories(go_pclntab_fuzzer PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(go_pclntab_fuzzer PRIVATE symbolize_elf absl::status absl::statusor
    absl::strings absl::str_format)
  target_compile_options(go_pclntab_fuzzer PRIVATE -fsanitize=fuzzer,address -g)
  target_link_options(go_pclntab_fuzzer PRIVATE -fsanitize=fuzzer,address)
endif()

add_executable(go_code_test ${CMAKE_CURRENT_LIST_DIR}/go_code_test.cc)
target_link_libraries(go_code_test PRIVATE symbolize_go testutil GTest::gtest_main)
# Builds cgo programs from source with every Go toolchain (several seconds each).
gtest_discover_tests(go_code_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)

add_executable(x86_decode_test ${CMAKE_CURRENT_LIST_DIR}/x86_decode_test.cc)
target_link_libraries(x86_decode_test PRIVATE symbolize_go testutil GTest::gtest_main)
# Builds Go programs (oldest and newest Go, plain and stripped PIE) and runs objdump on them.
gtest_discover_tests(x86_decode_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)
