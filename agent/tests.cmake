# Unprivileged tests of discovery, the profile pipeline and the HTTP handlers (fake sampler).
# scripts/test.sh runs unprivileged tests two at a time; RUN_SERIAL keeps those that time
# processes or requests alone.
add_executable(target_discovery_test target/target_discovery_test.cc)
target_link_libraries(target_discovery_test PRIVATE target testutil GTest::gtest_main)
gtest_discover_tests(target_discovery_test DISCOVERY_TIMEOUT 30 PROPERTIES RUN_SERIAL TRUE)

add_executable(pprof_server_test server/pprof_server_test.cc)
target_link_libraries(pprof_server_test PRIVATE server profile testutil PkgConfig::HTTPLIB GTest::gtest_main)
gtest_discover_tests(pprof_server_test DISCOVERY_TIMEOUT 30 PROPERTIES RUN_SERIAL TRUE)

add_executable(http_request_test server/http_request_test.cc)
target_link_libraries(http_request_test PRIVATE http_server GTest::gtest_main)
gtest_discover_tests(http_request_test DISCOVERY_TIMEOUT 30)

# Real sockets: slow, many and oversized clients; measures latency and the process's memory.
add_executable(http_server_test server/http_server_test.cc)
target_link_libraries(http_server_test PRIVATE http_server testutil GTest::gtest_main)
gtest_discover_tests(http_server_test DISCOVERY_TIMEOUT 30 PROPERTIES TIMEOUT 300 RUN_SERIAL TRUE)

add_executable(http_params_test server/http_params_test.cc)
target_link_libraries(http_params_test PRIVATE http_params GTest::gtest_main)
gtest_discover_tests(http_params_test DISCOVERY_TIMEOUT 30)

if(PPROF_SIDECAR_FUZZ)
  add_executable(http_request_fuzzer server/http_request_fuzzer.cc server/http_request.cc)
  target_include_directories(http_request_fuzzer PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(http_request_fuzzer PRIVATE absl::status absl::statusor absl::strings)
  target_compile_options(http_request_fuzzer PRIVATE -fsanitize=fuzzer,address -g)
  target_link_options(http_request_fuzzer PRIVATE -fsanitize=fuzzer,address)

  add_executable(http_params_fuzzer server/http_params_fuzzer.cc server/http_params.cc)
  target_include_directories(http_params_fuzzer PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(http_params_fuzzer PRIVATE absl::status absl::statusor absl::strings)
  target_compile_options(http_params_fuzzer PRIVATE -fsanitize=fuzzer,address -g)
  target_link_options(http_params_fuzzer PRIVATE -fsanitize=fuzzer,address)
endif()

add_executable(cpu_profile_test profile/cpu_profile_test.cc)
target_link_libraries(cpu_profile_test PRIVATE profile testutil absl::strings GTest::gtest_main)
gtest_discover_tests(cpu_profile_test DISCOVERY_TIMEOUT 30)
