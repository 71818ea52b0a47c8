# The Go-runtime reader (agent/goruntime): Go version, runtime variables (symtab or census of the
# runtime's code), struct layouts per release, reads of the target's memory. Pure: no BPF.
add_library(goruntime STATIC
  ${CMAKE_CURRENT_LIST_DIR}/process_memory.cc
  ${CMAKE_CURRENT_LIST_DIR}/go_vars.cc
  ${CMAKE_CURRENT_LIST_DIR}/go_heap_vars.cc
  ${CMAKE_CURRENT_LIST_DIR}/go_runtime.cc
  ${CMAKE_CURRENT_LIST_DIR}/go_labels.cc
  ${CMAKE_CURRENT_LIST_DIR}/thread_regs.cc)
target_include_directories(goruntime PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(goruntime PUBLIC symbolize_go symbolize_elf absl::status absl::statusor
  absl::strings absl::str_format absl::time)
