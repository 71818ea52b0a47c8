add_library(process_symbolizer STATIC process_symbolizer.cc)
target_include_directories(process_symbolizer PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(process_symbolizer PUBLIC symbolize_elf symbolize_go symbolize_dwarf
                      absl::status absl::statusor absl::strings)
