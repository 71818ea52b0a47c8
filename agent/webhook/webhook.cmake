# pprof-sidecar-webhook: the mutating admission webhook (second binary; see docs/KUBERNETES.md).
# Included from agent/CMakeLists.txt, so paths are relative to agent/.
find_package(nlohmann_json 3 QUIET)
if(NOT nlohmann_json_FOUND)
  message(WARNING "nlohmann-json3-dev not found: pprof-sidecar-webhook is not built "
                  "(run scripts/install-deps.sh)")
  return()
endif()
find_package(OpenSSL REQUIRED)

add_library(webhook_injector STATIC webhook/injector.cc)
target_include_directories(webhook_injector PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(webhook_injector PUBLIC nlohmann_json::nlohmann_json absl::status
                      absl::statusor absl::strings)

if(PPROF_SIDECAR_FUZZ)
  add_executable(webhook_fuzzer webhook/webhook_fuzzer.cc)
  target_compile_options(webhook_fuzzer PRIVATE -fsanitize=fuzzer,address)
  target_link_options(webhook_fuzzer PRIVATE -fsanitize=fuzzer,address)
  target_link_libraries(webhook_fuzzer PRIVATE webhook_injector)
  return()
endif()

add_library(webhook_server STATIC webhook/webhook_server.cc)
target_include_directories(webhook_server PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(webhook_server PUBLIC webhook_injector PkgConfig::HTTPLIB OpenSSL::SSL
                      OpenSSL::Crypto Threads::Threads)

add_executable(pprof-sidecar-webhook webhook/webhook_main.cc)
target_link_libraries(pprof-sidecar-webhook PRIVATE webhook_server gflags)
set_target_properties(pprof-sidecar-webhook PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})

add_executable(webhook_test webhook/webhook_test.cc)
target_link_libraries(webhook_test PRIVATE webhook_server testutil GTest::gtest_main)
gtest_discover_tests(webhook_test DISCOVERY_TIMEOUT 30)
