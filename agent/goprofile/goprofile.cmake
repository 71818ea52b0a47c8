# Go profiles read from a Go target's runtime (agent/goprofile): goroutine, threadcreate, block,
# mutex. Pure: no BPF.
add_library(goprofile STATIC
  ${CMAKE_CURRENT_LIST_DIR}/goroutines.cc
  ${CMAKE_CURRENT_LIST_DIR}/go_stack_format.cc
  ${CMAKE_CURRENT_LIST_DIR}/goroutine_source.cc)
target_include_directories(goprofile PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(goprofile PUBLIC goruntime registry pprof_encoder absl::status
  absl::statusor absl::strings absl::str_format absl::time)
