// /debug/pprof/heap and /debug/pprof/allocs: two profile kinds over one HeapProfiler (Go
// targets' own heap profile read from their memory; native targets' malloc sampler). A snapshot
// without ?seconds, a delta with it, as Go. The "heap" kind carries the shared /healthz lines
// (the target's Go release, what cannot be read) and the heap profiler's /metrics.
// /debug/pprof/native_heap and /debug/pprof/native_allocs: the same two shapes from the malloc
// sampler for any target with a probeable C allocator, so that a Go program's C allocations (cgo)
// can be seen without changing what heap/allocs mean for it; a Go program that maps no C library
// answers 501.
#ifndef PPROF_SIDECAR_AGENT_HEAP_HEAP_SOURCE_H_
#define PPROF_SIDECAR_AGENT_HEAP_HEAP_SOURCE_H_

#include "absl/status/status.h"
#include "agent/heap/heap_profiler.h"
#include "agent/registry/profile_registry.h"

namespace pprof_sidecar {

class HeapSource : public ProfileSource {
 public:
  // `native`: native_heap/native_allocs (HeapRequest::native).
  HeapSource(HeapProfiler* heap, HeapProfileKind kind, bool native = false);
  const ProfileKindInfo& info() const override { return info_; }
  absl::StatusOr<ProfileResponse> Collect(const ProfileRequest& req) override;
  std::string HealthLines(const std::optional<ProcessInfo>& target) const override;
  void WriteMetrics(const std::optional<ProcessInfo>& target, MetricsWriter* w) const override;

 private:
  void WriteTargetMetrics(const ProcessInfo& t, MetricsWriter* w) const;
  // native_heap's /healthz lines for a Go target (its C allocations).
  std::string NativeHealthLines(const ProcessInfo& target) const;
  void WriteNativeMetrics(const HeapProfilerStats& h, MetricsWriter* w) const;

  HeapProfiler* const heap_;
  const HeapProfileKind kind_;
  const bool native_;
  ProfileKindInfo info_;
};

// Registers "heap", "allocs", "native_heap" and "native_allocs" over `heap` (which outlives the
// registry).
absl::Status AddHeapSources(HeapProfiler* heap, ProfileRegistry* registry);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_HEAP_HEAP_SOURCE_H_
