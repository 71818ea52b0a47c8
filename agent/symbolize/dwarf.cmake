# DWARF symbolizer (function, file:line, inlined frames) for native code, via elfutils libdw.
pkg_check_modules(LIBDW REQUIRED IMPORTED_TARGET libdw)

add_library(symbolize_dwarf STATIC ${CMAKE_CURRENT_LIST_DIR}/dwarf_symbolizer.cc)
target_include_directories(symbolize_dwarf PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(symbolize_dwarf
  PUBLIC absl::status absl::statusor absl::synchronization absl::base
  PRIVATE symbolize_elf PkgConfig::LIBDW PkgConfig::LIBELF ZLIB::ZLIB absl::flat_hash_map
          absl::strings)

if(PPROF_SIDECAR_FUZZ)
  # Instrument the parser itself so libFuzzer's coverage guidance sees it.
  target_compile_options(symbolize_dwarf PRIVATE -fsanitize=fuzzer-no-link,address)
  target_link_options(symbolize_dwarf INTERFACE -fsanitize=address)
  add_executable(dwarf_symbolizer_fuzzer ${CMAKE_CURRENT_LIST_DIR}/dwarf_symbolizer_fuzzer.cc)
  target_compile_options(dwarf_symbolizer_fuzzer PRIVATE -fsanitize=fuzzer,address)
  target_link_options(dwarf_symbolizer_fuzzer PRIVATE -fsanitize=fuzzer,address)
  target_link_libraries(dwarf_symbolizer_fuzzer PRIVATE symbolize_dwarf PkgConfig::LIBELF)
endif()

add_executable(dwarf_symbolizer_test ${CMAKE_CURRENT_LIST_DIR}/dwarf_symbolizer_test.cc)
target_link_libraries(dwarf_symbolizer_test PRIVATE symbolize_dwarf testutil absl::strings
  absl::str_format GTest::gtest_main Threads::Threads)
gtest_discover_tests(dwarf_symbolizer_test DISCOVERY_TIMEOUT 60)
