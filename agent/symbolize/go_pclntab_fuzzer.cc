// Fuzzes the pclntab parser: header validation, function lookup, pc-value tables and names.
#include <cstddef>
#include <cstdint>

#include "agent/symbolize/go_pclntab.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t text_start = 0;
  for (int i = 0; i < 8; ++i) text_start |= static_cast<uint64_t>(data[i]) << (8 * i);
  absl::string_view table(reinterpret_cast<const char*>(data + 8), size - 8);
  auto tab = pprof_sidecar::GoPclntab::FromBytes(table, text_start % 0x10000000);
  if (!tab.ok()) return 0;
  const uint64_t lo = (*tab)->min_pc(), hi = (*tab)->max_pc();
  const uint64_t span = hi > lo ? hi - lo : 1;
  for (uint64_t k = 0; k < 64; ++k) {
    uint64_t pc = lo + (k * 0x9e3779b97f4a7c15ull) % (span + 16);
    (void)(*tab)->Symbolize(pc);
    (void)(*tab)->LookupFunc(pc);
  }
  return 0;
}
