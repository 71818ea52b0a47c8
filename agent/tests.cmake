# Unprivileged tests of discovery, the profile pipeline and the HTTP handlers (fake sampler).
add_executable(target_discovery_test target/target_discovery_test.cc)
target_link_libraries(target_discovery_test PRIVATE target testutil GTest::gtest_main)
gtest_discover_tests(target_discovery_test DISCOVERY_TIMEOUT 30)

add_executable(pprof_server_test server/pprof_server_test.cc)
target_link_libraries(pprof_server_test PRIVATE server testutil GTest::gtest_main)
gtest_discover_tests(pprof_server_test DISCOVERY_TIMEOUT 30)
