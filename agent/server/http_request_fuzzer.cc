// Fuzzes the HTTP request parser with arbitrary bytes fed in arbitrary pieces; checks that it
// never consumes more than it was given and that every complete request is within the limits.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "agent/server/http_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t step = 1 + data[0] % 64;  // the first byte picks the piece size
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  pprof_sidecar::HttpLimits lim;
  lim.max_request_line = 256;
  lim.max_header_bytes = 1024;
  lim.max_headers = 8;
  lim.max_body_bytes = 512;
  pprof_sidecar::HttpRequestParser p(lim);
  std::string buf;
  for (size_t i = 0; i < bytes.size(); i += step) {
    buf.append(bytes, i, step);
    while (true) {
      size_t used = 0;
      auto st = p.Feed(buf, &used);
      if (used > buf.size()) abort();
      buf.erase(0, used);
      if (st == pprof_sidecar::HttpRequestParser::State::kError) {
        if (p.error_status() < 400 || p.error_status() > 599) abort();
        return 0;
      }
      if (st != pprof_sidecar::HttpRequestParser::State::kComplete) break;
      const auto& r = p.request();
      if (r.body.size() > lim.max_body_bytes || r.headers.size() > lim.max_headers) abort();
      if (r.path.empty() || (r.path[0] != '/' && r.path != "*")) abort();
      (void)pprof_sidecar::ParseQuery(r.query);
      p.Reset();
    }
    if (buf.size() > lim.max_header_bytes + 2 * step + 1024) abort();  // bounded buffering
  }
  return 0;
}
