// Parsers for the untrusted parts of HTTP requests and for the listen flag. Pure functions, so
// they are unit-tested and fuzzed (http_params_fuzzer.cc) without a server.
#ifndef PPROF_SIDECAR_AGENT_SERVER_HTTP_PARAMS_H_
#define PPROF_SIDECAR_AGENT_SERVER_HTTP_PARAMS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pprof_sidecar {

// Host and port of a listen address ("127.0.0.1:6060", "[::1]:6060", "localhost:6060").
struct HostPort {
  std::string host;
  int port = 0;
};
absl::StatusOr<HostPort> ParseListenAddress(const std::string& addr);
// True if `host` is a loopback address or "localhost".
bool IsLoopbackHost(const std::string& host);

// Parses the `seconds` query parameter, more strictly than Go's handler (which uses 30 for
// anything it cannot parse): absent (nullopt) -> default; present, it must be a positive
// integer of at most max: "" (`seconds=`), a non-integer, zero or a negative value, or above
// max -> InvalidArgument.
absl::StatusOr<int> ParseSecondsParam(const std::optional<std::string>& value, int default_seconds,
                                      int max_seconds);

// The program counters of a /debug/pprof/symbol request, as Go's handler reads them: words
// separated by '+', each hex with an optional 0x prefix; other words are skipped. At most
// `max_pcs` are returned (the rest is ignored) so one request cannot make the agent do
// unbounded work.
std::vector<uint64_t> ParseSymbolRequest(absl::string_view input, size_t max_pcs = 10000);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SERVER_HTTP_PARAMS_H_
