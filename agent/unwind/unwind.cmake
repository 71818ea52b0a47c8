# User-space stack unwinding: x86-64 CFI (.eh_frame/.debug_frame) and Go pclntab.
add_library(unwind STATIC ${CMAKE_CURRENT_LIST_DIR}/cfi.cc ${CMAKE_CURRENT_LIST_DIR}/unwinder.cc)
target_include_directories(unwind PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(unwind PUBLIC symbolize_elf symbolize_go absl::status absl::statusor
  absl::strings)

# Samples reduced as they arrive: unwound against the mappings of their process.
add_library(sample_unwinder STATIC ${CMAKE_CURRENT_LIST_DIR}/sample_unwinder.cc
  ${CMAKE_CURRENT_LIST_DIR}/unwind_tables.cc)
target_include_directories(sample_unwinder PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(sample_unwinder PUBLIC unwind process_symbolizer absl::time)

# Per-binary tables over this test's own executable and C library (no privileges).
add_executable(unwind_tables_test ${CMAKE_CURRENT_LIST_DIR}/unwind_tables_test.cc)
target_link_libraries(unwind_tables_test PRIVATE sample_unwinder GTest::gtest_main)
gtest_discover_tests(unwind_tables_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)

add_executable(cfi_test ${CMAKE_CURRENT_LIST_DIR}/cfi_test.cc)
target_link_libraries(cfi_test PRIVATE unwind testutil absl::str_format GTest::gtest_main)
gtest_discover_tests(cfi_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)

# Privileged end-to-end tests: real BPF sampler + BuildCpuProfile on targets built by the test.
# RUN_SERIAL: the proportion assertions (+-5 pp) need CPUs not saturated by other tests.
add_executable(unwind_bpf_test ${CMAKE_CURRENT_LIST_DIR}/unwind_bpf_test.cc)
target_link_libraries(unwind_bpf_test PRIVATE profile sampler testutil absl::strings
  absl::str_format Threads::Threads GTest::gtest_main)
gtest_discover_tests(unwind_bpf_test
  DISCOVERY_TIMEOUT 60
  PROPERTIES LABELS privileged TIMEOUT 900 RUN_SERIAL TRUE)

if(PPROF_SIDECAR_FUZZ)
  # The parser is compiled into the fuzzer so it gets coverage instrumentation.
  add_executable(cfi_fuzzer ${CMAKE_CURRENT_LIST_DIR}/cfi_fuzzer.cc
    ${CMAKE_CURRENT_LIST_DIR}/cfi.cc ${CMAKE_CURRENT_LIST_DIR}/unwinder.cc)
  target_include_directories(cfi_fuzzer PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(cfi_fuzzer PRIVATE symbolize_elf symbolize_go absl::status absl::statusor
    absl::strings)
  target_compile_options(cfi_fuzzer PRIVATE -fsanitize=fuzzer,address -g)
  target_link_options(cfi_fuzzer PRIVATE -fsanitize=fuzzer,address)
endif()
