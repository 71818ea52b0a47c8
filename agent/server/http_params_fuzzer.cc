// Fuzzes every parser of untrusted request bytes and the listen flag; checks their contracts.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "agent/server/http_params.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  auto secs = pprof_sidecar::ParseSecondsParam(s, 30, 300);
  if (s.empty() && secs.ok()) abort();  // a present but empty value is an error
  if (secs.ok() && (*secs <= 0 || *secs > 300)) abort();
  auto hp = pprof_sidecar::ParseListenAddress(s);
  if (hp.ok()) {
    if (hp->port < 0 || hp->port > 65535) abort();
    (void)pprof_sidecar::IsLoopbackHost(hp->host);
  }
  auto pcs = pprof_sidecar::ParseSymbolRequest(s, 64);
  if (pcs.size() > 64) abort();
  return 0;
}
