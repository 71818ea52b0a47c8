# Native symbolization building blocks: ELF files, native symbolizer, /proc maps, kallsyms.
set(_SYMBOLIZE_ELF_SRCS
  ${CMAKE_CURRENT_LIST_DIR}/elf_file.cc
  ${CMAKE_CURRENT_LIST_DIR}/elf_symbolizer.cc
  ${CMAKE_CURRENT_LIST_DIR}/proc_maps.cc
  ${CMAKE_CURRENT_LIST_DIR}/kallsyms.cc
  ${CMAKE_CURRENT_LIST_DIR}/target_file.cc
)
add_library(symbolize_elf STATIC ${_SYMBOLIZE_ELF_SRCS})
target_include_directories(symbolize_elf PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(symbolize_elf PUBLIC absl::status absl::statusor absl::strings
  absl::str_format PRIVATE ZLIB::ZLIB)

foreach(_t elf_file_test elf_symbolizer_test proc_maps_test kallsyms_test target_file_test)
  add_executable(${_t} ${CMAKE_CURRENT_LIST_DIR}/${_t}.cc)
  target_link_libraries(${_t} PRIVATE symbolize_elf testutil GTest::gtest_main)
  gtest_discover_tests(${_t} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)
endforeach()

if(PPROF_SIDECAR_FUZZ)
  # The library sources are compiled into each fuzzer so they get coverage instrumentation.
  foreach(_f elf_file_fuzzer proc_maps_fuzzer)
    add_executable(${_f} ${CMAKE_CURRENT_LIST_DIR}/${_f}.cc ${_SYMBOLIZE_ELF_SRCS})
    target_include_directories(${_f} PRIVATE ${CMAKE_SOURCE_DIR})
    target_link_libraries(${_f} PRIVATE absl::status absl::statusor absl::strings
      absl::str_format ZLIB::ZLIB)
    target_compile_options(${_f} PRIVATE -fsanitize=fuzzer,address -g)
    target_link_options(${_f} PRIVATE -fsanitize=fuzzer,address)
  endforeach()
endif()
