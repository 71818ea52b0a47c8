// SampleUnwinder: user stacks unwound from a sample's registers and stack copy (CFI, Go pclntab,
// frame pointers), against the process's mappings as they were when the sample arrived. The
// per-binary tables (CFI, the cgo call bridge) come from an UnwindTableCache.
#ifndef PPROF_SIDECAR_AGENT_UNWIND_SAMPLE_UNWINDER_H_
#define PPROF_SIDECAR_AGENT_UNWIND_SAMPLE_UNWINDER_H_

#include <cstdint>
#include <map>
#include <memory>

#include "absl/time/time.h"
#include "agent/sample/stack_sample.h"
#include "agent/symbolize/process_symbolizer.h"
#include "agent/unwind/unwind_tables.h"

namespace pprof_sidecar {

// Reduces samples as they arrive: unwinds the user stack copy into user_ips and frees the copy
// (~10 KiB -> a few hundred bytes per sample), so that profile windows keep only PCs. Keeps one
// maps session per pid, re-read every `maps_refresh` (new mappings: dlopen, a restarted target).
// Not thread-safe: one instance per delivering thread (or behind a mutex).
class SampleUnwinder {
 public:
  // `tables` (null: one of its own) may be shared with other unwinders of the same symbolizer;
  // both outlive this unwinder.
  explicit SampleUnwinder(ProcessSymbolizer* symbolizer, UnwindTableCache* tables = nullptr,
                          absl::Duration maps_refresh = absl::Seconds(1));
  ~SampleUnwinder();
  // Unwinds `s` in place if it carries a stack copy (sets s->unwound; clears user_stack); else
  // leaves it as is. A sample taken while the kernel
  // handled a user breakpoint (a uprobe: its kernel stack was entered at asm_exc_int3) starts at
  // the int3, one byte before the saved user ip, where the probed instruction has not run yet.
  // If `maps` is given, sets it to the mappings (and binaries) the sample's process had when it
  // arrived, to symbolize it against them later (a process that exec'd since keeps its old
  // image); one snapshot is shared by consecutive samples until the file mappings change.
  void Reduce(StackSample* s,
              std::shared_ptr<const ProcessSymbolizer::MapsSnapshot>* maps = nullptr);
  // Opens pid's binaries and builds their unwinding tables now (e.g. when the target is found),
  // so that neither the first samples nor the first profile pay for it. DWARF is left for the
  // first profile whose samples land in a binary: most binaries never need it, and its indexes
  // are the largest memory the agent would hold.
  void Warm(uint32_t pid);

 private:
  struct PidSession;
  ProcessSymbolizer* const symbolizer_;
  const absl::Duration maps_refresh_;
  const std::unique_ptr<UnwindTableCache> own_tables_;
  UnwindTableCache* const tables_;
  std::map<uint32_t, std::unique_ptr<PidSession>> pids_;
  // Outermost kernel return addresses seen (the kernel entry stubs, a handful): whether each is
  // in asm_exc_int3. Bounded.
  std::map<uint64_t, bool> int3_entry_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_UNWIND_SAMPLE_UNWINDER_H_
