// Turning raw CPU samples into a pprof CPU profile identical in shape to what Go's
// runtime/pprof writes: sample types samples/count and cpu/nanoseconds, period type
// cpu/nanoseconds, period 1e9/hz, locations with multi-Line inline expansion, mappings with build
// ids, the goroutine's pprof labels (StackSample::labels) as string labels of its samples. Kernel
// frames (no mapping) sit on top of the user frames of the same sample; their locations have
// address 0 (the name is kept; a raw kernel address would reveal the kernel's KASLR offset to every
// reader of the profile), and an unsymbolized one is named "[kernel]".
#ifndef PPROF_SIDECAR_AGENT_PROFILE_CPU_PROFILE_H_
#define PPROF_SIDECAR_AGENT_PROFILE_CPU_PROFILE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/sample/stack_sample.h"
#include "agent/symbolize/process_symbolizer.h"
#include "agent/symbolize/source_line.h"
#include "agent/unwind/sample_unwinder.h"

namespace pprof_sidecar {

struct CpuProfileParams {
  int hz = 100;
  std::string clock;  // what took the samples, for the profile's comment (empty: not said)
  absl::Time start;
  absl::Duration duration;
  std::vector<std::string> comments;  // added verbatim (drops, target changes, ...)
};

// What the build saw; exported to /metrics and written as profile comments.
struct CpuProfileReport {
  uint64_t samples = 0;
  uint64_t samples_reaching_root = 0;  // outermost frame is a thread root function
  uint64_t samples_without_user_stack = 0;
  uint64_t user_frames = 0;
  uint64_t user_frames_unsymbolized = 0;
  uint64_t kernel_frames = 0;
  uint64_t kernel_frames_unsymbolized = 0;
  uint64_t kernel_frames_hidden = 0;  // collapsed into "[kernel]": no kernel symbols readable
  // User-space unwinding (agent/unwind) from the sample's registers and stack copy.
  uint64_t samples_unwound = 0;   // user stack from the unwinder (vs. frame pointers only)
  uint64_t samples_stitched = 0;  // ... completed from the frame-pointer walk
  // Samples whose stack does not reach a thread root, by why the unwinder stopped.
  uint64_t unwind_no_cfi = 0;              // no CFI/pclntab entry for a pc
  uint64_t unwind_read_outside_stack = 0;  // the copied stack was too short
  uint64_t unwind_depth_limit = 0;
  uint64_t unwind_bad_address = 0;       // pc outside mapped binaries, sp not increasing
  uint64_t unwind_stack_switch = 0;      // Go stack switch (systemstack, asmcgocall, ...)
  uint64_t not_root_frame_pointers = 0;  // no stack copy; frame-pointer walk did not reach root

  // Field by field: reports of several builds summed.
  CpuProfileReport& operator+=(const CpuProfileReport& o);
};

// True for functions at which a thread's stack legitimately ends: runtime.goexit,
// runtime.main, runtime.mstart, runtime.rt0_go, _start, __libc_start_main,
// __libc_start_call_main, clone, clone3, start_thread. A sample also counts as reaching its root
// when the unwinder found the end of the stack (CFI marks the return address undefined, as in
// glibc's clone3 and _start) even if that frame's name is unknown (stripped libc).
bool IsThreadRootFunction(const std::string& name);

// Builds, validates and gzips the profile. `samples` may come from several pids (a target that
// restarted during the window); each pid is symbolized against its own mappings. The samples are
// reduced by a SampleUnwinder first (on copies), as the agent reduces them on arrival.
absl::StatusOr<std::string> BuildCpuProfile(const std::vector<StackSample>& samples,
                                            const CpuProfileParams& params,
                                            ProcessSymbolizer* symbolizer,
                                            CpuProfileReport* report);
// The same for samples held elsewhere (shared between profile windows), already reduced by
// SampleUnwinder (a sample that still carries a stack copy is used by its frame-pointer walk).
// With `maps` (one per sample, from SampleUnwinder::Reduce; null entries allowed) each sample is
// symbolized against the mappings its process had when it was taken, else against those read now.
absl::StatusOr<std::string> BuildCpuProfile(
    const std::vector<const StackSample*>& samples, const CpuProfileParams& params,
    ProcessSymbolizer* symbolizer, CpuProfileReport* report,
    const std::vector<std::shared_ptr<const ProcessSymbolizer::MapsSnapshot>>* maps = nullptr);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_PROFILE_CPU_PROFILE_H_
