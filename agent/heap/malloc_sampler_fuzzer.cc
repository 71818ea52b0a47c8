// Fuzzes the malloc sampler's byte consumers: PlaceEntryProbe over machine code of a target's
// binary (untrusted: it comes from the target's container) and MallocProfileState's ring buffer
// record decoder (fed by our BPF program; fuzzed so that a layout mismatch can never be UB).
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "agent/heap/allocator_probes.h"
#include "agent/heap/malloc_profile_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view code(reinterpret_cast<const char*>(data), size);
  const pprof_sidecar::ProbePlacement p = pprof_sidecar::PlaceEntryProbe(code, 0xc4);
  if (p.offset > code.size() || (!p.emulated && p.offset > 4)) __builtin_trap();
  static pprof_sidecar::MallocProfileState state({1 << 12, 1 << 8, 127});
  std::string copy(code);  // records are decoded from an aligned buffer in production
  state.HandleRecord(copy.data(), copy.size());
  (void)state.Snapshot(512 * 1024);
  return 0;
}
