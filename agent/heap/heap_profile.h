// Heap profiles in the shape runtime/pprof's writeHeapProto gives them: sample types
// alloc_objects/count, alloc_space/bytes, inuse_objects/count, inuse_space/bytes; period type
// space/bytes; period = the sampling rate; values unsampled like scaleHeapSample; a numeric
// "bytes" label with the bucket's object size; `allocs` sets default_sample_type alloc_space
// (`heap` leaves it unset, so tools default to the last type, inuse_space).
#ifndef PPROF_SIDECAR_AGENT_HEAP_HEAP_PROFILE_H_
#define PPROF_SIDECAR_AGENT_HEAP_HEAP_PROFILE_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/goruntime/go_runtime.h"
#include "agent/heap/heap_snapshot.h"
#include "agent/symbolize/process_symbolizer.h"

namespace pprof_sidecar {

enum class HeapProfileKind { kHeap, kAllocs };

struct HeapProfileParams {
  HeapProfileKind kind = HeapProfileKind::kHeap;
  absl::Time time;
  absl::Duration duration;  // zero for a snapshot; the window for a delta profile
  std::vector<std::string> comments;
  // Native (malloc sampler) stacks: no Go runtime frame hiding or inline-PC folding, and the
  // summary comment speaks of the sampling rate instead of Go's MemProfileRate/cycle.
  bool native = false;
  // Go stacks (not native): the target's Go binary, whose inline tree folds them. Required.
  const GoImage* go_image = nullptr;
};

struct HeapProfileReport {
  uint64_t records = 0;
  uint64_t frames = 0;
  uint64_t frames_unsymbolized = 0;
};

// runtime/pprof's scaleHeapSample: estimates the unsampled (count, size) of a bucket sampled by
// a Poisson process with mean `rate` bytes: both divided by 1 - exp(-avgsize/rate).
std::pair<int64_t, int64_t> ScaleHeapSample(int64_t count, int64_t size, int64_t rate);

// True if runtime/pprof of Go release 1.`go_minor` hides this frame at the top of a heap stack:
// runtime.* functions, and from Go 1.24 internal/runtime/* (0: an unknown release, as the newest).
bool IsHiddenGoRuntimeFrame(const std::string& function, int go_minor);

// Builds, validates and gzips the profile of `snap`, read from process `pid`. Stack PCs are return
// addresses: each is symbolized at pc-1 with inlined frames expanded; the PCs Go records for
// inlined callers are folded into the location of their inlinee as for every Go-recorded stack
// (GoStackLocations, with params.go_image; InvalidArgument without it); leading runtime frames
// are hidden (unless the whole stack is runtime); runtime.goexit is dropped.
// With params.native, `snap` comes from the malloc sampler (MallocProfileState::Snapshot):
// every PC is a return address, symbolized at pc-1, one location per PC.
absl::StatusOr<std::string> BuildHeapProfile(const HeapSnapshot& snap, pid_t pid,
                                             const HeapProfileParams& params,
                                             ProcessSymbolizer* symbolizer,
                                             HeapProfileReport* report);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_HEAP_HEAP_PROFILE_H_
