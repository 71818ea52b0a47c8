# Heap and allocation profiles (agent/heap): Go targets' own heap-profile buckets read from their
# memory. Included from agent/CMakeLists.txt before the server library.
add_library(heap STATIC
  ${CMAKE_CURRENT_LIST_DIR}/go_heap.cc
  ${CMAKE_CURRENT_LIST_DIR}/heap_profile.cc
  ${CMAKE_CURRENT_LIST_DIR}/heap_profiler.cc
  ${CMAKE_CURRENT_LIST_DIR}/heap_snapshot.cc
  ${CMAKE_CURRENT_LIST_DIR}/heap_source.cc
  ${CMAKE_CURRENT_LIST_DIR}/malloc_profile_state.cc)
target_include_directories(heap PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(heap PUBLIC goruntime pprof_encoder location_table registry process_symbolizer
  allocator_probes symbolize_go symbolize_elf
  absl::status absl::statusor absl::strings absl::str_format absl::time absl::flat_hash_map)

# Where malloc probes go (allocator functions, probed instruction): pure, no libbpf.
add_library(allocator_probes STATIC ${CMAKE_CURRENT_LIST_DIR}/allocator_probes.cc)
target_include_directories(allocator_probes PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(allocator_probes PUBLIC symbolize_go symbolize_elf process_symbolizer absl::status
  absl::statusor absl::strings)

# Bookkeeping, interval table, unsampling, native profile building, probe placement: no
# privileges.
add_executable(malloc_profile_state_test ${CMAKE_CURRENT_LIST_DIR}/malloc_profile_state_test.cc)
target_link_libraries(malloc_profile_state_test PRIVATE heap allocator_probes testutil
  GTest::gtest_main)
gtest_discover_tests(malloc_profile_state_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)

# Real uprobes on a C target built by the test (tests/targets/heap_c_split).
add_executable(malloc_sampler_bpf_test ${CMAKE_CURRENT_LIST_DIR}/malloc_sampler_bpf_test.cc)
target_link_libraries(malloc_sampler_bpf_test PRIVATE malloc_sampler sampler heap profile server testutil
  PkgConfig::HTTPLIB Threads::Threads GTest::gtest_main)
gtest_discover_tests(malloc_sampler_bpf_test DISCOVERY_TIMEOUT 60
  PROPERTIES LABELS privileged TIMEOUT 900 RUN_SERIAL TRUE)

# Unit tests (fake memory) and locating the runtime variables in real binaries of every Go.
add_executable(go_heap_test ${CMAKE_CURRENT_LIST_DIR}/go_heap_test.cc)
target_link_libraries(go_heap_test PRIVATE heap testutil GTest::gtest_main)
gtest_discover_tests(go_heap_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)

# End to end: real Go targets (each Go version, stripped, PIE) compared with their own
# /debug/pprof/heap. Reads another process's memory: needs root/CAP_SYS_PTRACE.
add_executable(heap_profiler_test ${CMAKE_CURRENT_LIST_DIR}/heap_profiler_test.cc)
target_link_libraries(heap_profiler_test PRIVATE heap profile server testutil PkgConfig::HTTPLIB
  Threads::Threads GTest::gtest_main)
gtest_discover_tests(heap_profiler_test DISCOVERY_TIMEOUT 60
  PROPERTIES LABELS privileged TIMEOUT 900 RUN_SERIAL TRUE)

if(PPROF_SIDECAR_FUZZ)
  # Bucket-list walker (both record layouts) and the x86-64 decoder over fuzzer-controlled bytes.
  add_executable(go_heap_fuzzer ${CMAKE_CURRENT_LIST_DIR}/go_heap_fuzzer.cc
    ${CMAKE_CURRENT_LIST_DIR}/go_heap.cc ${CMAKE_CURRENT_LIST_DIR}/heap_snapshot.cc
    ${CMAKE_SOURCE_DIR}/agent/goruntime/process_memory.cc
    ${CMAKE_SOURCE_DIR}/agent/goruntime/go_vars.cc
    ${CMAKE_SOURCE_DIR}/agent/goruntime/go_heap_vars.cc
    ${CMAKE_SOURCE_DIR}/agent/symbolize/x86_decode.cc)
  target_include_directories(go_heap_fuzzer PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(go_heap_fuzzer PRIVATE symbolize_go symbolize_elf absl::status
    absl::statusor absl::strings absl::str_format)
  target_compile_options(go_heap_fuzzer PRIVATE -fsanitize=fuzzer,address -g)
  target_link_options(go_heap_fuzzer PRIVATE -fsanitize=fuzzer,address)

  # Probe placement over machine code, ring buffer record decoding.
  # No libbpf: the pure placement and decoding code only.
  add_executable(malloc_sampler_fuzzer ${CMAKE_CURRENT_LIST_DIR}/malloc_sampler_fuzzer.cc
    ${CMAKE_CURRENT_LIST_DIR}/allocator_probes.cc ${CMAKE_CURRENT_LIST_DIR}/malloc_profile_state.cc
    ${CMAKE_SOURCE_DIR}/agent/symbolize/x86_decode.cc)
  target_include_directories(malloc_sampler_fuzzer PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(malloc_sampler_fuzzer PRIVATE process_symbolizer
    symbolize_elf pprof_encoder absl::flat_hash_map absl::status absl::statusor absl::strings
    absl::str_format absl::time Threads::Threads)
  target_compile_options(malloc_sampler_fuzzer PRIVATE -fsanitize=fuzzer,address -g)
  target_link_options(malloc_sampler_fuzzer PRIVATE -fsanitize=fuzzer,address)
endif()
