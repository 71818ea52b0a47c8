// Fuzzes the malloc sampler's byte consumers: EntryProbeSkip over machine code of a target's
// binary (untrusted: it comes from the target's container) and MallocProfileState's ring buffer
// record decoder (fed by our BPF program; fuzzed so that a layout mismatch can never be UB).
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "agent/heap/malloc_profile_state.h"
#include "agent/heap/malloc_sampler.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view code(reinterpret_cast<const char*>(data), size);
  const size_t a = pprof_sidecar::EntryProbeSkip(code, true);
  const size_t b = pprof_sidecar::EntryProbeSkip(code, false);
  if (a > 13 || b > 4) __builtin_trap();  // endbr64 + test + je rel32 at most
  static pprof_sidecar::MallocProfileState state({1 << 12, 1 << 8, 127});
  std::string copy(code);  // records are decoded from an aligned buffer in production
  state.HandleRecord(copy.data(), copy.size());
  (void)state.Snapshot(512 * 1024);
  return 0;
}
