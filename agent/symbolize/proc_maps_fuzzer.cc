// libFuzzer target: /proc/PID/maps parsing of arbitrary text.
#include <cstddef>
#include <cstdint>

#include "agent/symbolize/proc_maps.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m =
      pprof_sidecar::ParseProcMaps(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (m.ok()) {
    for (const auto& e : *m) (void)e.IsFileBacked();
  }
  return 0;
}
