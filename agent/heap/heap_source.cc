#include "agent/heap/heap_source.h"

#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace pprof_sidecar {

HeapSource::HeapSource(HeapProfiler* heap, HeapProfileKind kind, bool native)
    : heap_(heap), kind_(kind), native_(native) {
  const bool allocs = kind == HeapProfileKind::kAllocs;
  info_.name = absl::StrCat(native ? "native_" : "", allocs ? "allocs" : "heap");
  if (native) {
    info_.description =
        allocs ? "A sampling of all past C/C++ allocations (malloc & co, operator new) since the "
                 "allocator uprobes were attached, for any target with a C allocator: a Go "
                 "program's are those of its C code (cgo), with their Go callers (seconds=N: "
                 "delta)."
               : "A sampling of C/C++ allocations (malloc & co, operator new) of live objects "
                 "since the allocator uprobes were attached, for any target with a C allocator: a "
                 "Go program's are those of its C code (cgo), with their Go callers (seconds=N: "
                 "delta).";
  } else {
    info_.description =
        allocs
            ? "A sampling of all past memory allocations of a Go target, read from its runtime; "
              "of other targets, sampled by malloc uprobes since they were attached (seconds=N: "
              "delta)."
            : "A sampling of memory allocations of live objects of a Go target as of its last GC "
              "(gc=1 cannot force a GC from outside), or of another target from malloc uprobes "
              "(seconds=N: delta).";
  }
  info_.seconds = ProfileKindInfo::Seconds::kDelta;
  info_.filename = info_.name;
  info_.error_prefix = absl::StrCat("Could not get ", info_.name, " profile");
}

absl::StatusOr<ProfileResponse> HeapSource::Collect(const ProfileRequest& req) {
  HeapRequest hr;
  hr.kind = kind_;
  hr.native = native_;
  hr.delta = req.seconds;
  int gc = 0;
  auto it = req.params.find("gc");
  hr.gc = it != req.params.end() && absl::SimpleAtoi(it->second, &gc) && gc > 0;
  hr.comments = req.comments;
  if (!native_ && heap_->native_enabled()) {
    absl::StatusOr<GoTargetInfo> info = heap_->TargetInfo(static_cast<pid_t>(req.target->pid));
    if (info.ok() && info->is_go && info->c_allocator) {
      hr.comments.push_back(
          "pprof-sidecar: this Go program maps a C library (cgo): the C allocations of its C code "
          "(malloc & co) are not in the Go runtime's profile; /debug/pprof/native_heap and "
          "/debug/pprof/native_allocs sample them (allocator probes attached on request)");
    }
  }
  hr.cancelled = req.cancelled;
  hr.cut_short = req.cut_short;
  hr.cut_short_reason = req.cut_short_reason;
  auto prof = heap_->Collect(static_cast<pid_t>(req.target->pid), hr);
  if (!prof.ok()) {
    const absl::Status& st = prof.status();
    // The target's state (gone, exec'd, memory profiling turned off in it): 503 with the reason.
    if (absl::IsNotFound(st)) return absl::UnavailableError(st.message());
    return st;
  }
  ProfileResponse r;
  r.body = *std::move(prof);
  return r;
}

std::string HeapSource::HealthLines(const std::optional<ProcessInfo>& target) const {
  if (kind_ != HeapProfileKind::kHeap || !target) return "";
  if (native_) return NativeHealthLines(*target);
  absl::StatusOr<GoTargetInfo> info = heap_->TargetInfo(static_cast<pid_t>(target->pid));
  if (info.ok() && !info->is_go) {  // malloc profiling: policy, attachment, last error
    std::string o;
    for (const std::string& l : heap_->NativeHealthLines()) absl::StrAppend(&o, l, "\n");
    return o;
  }
  if (!info.ok()) return "";
  std::string o =
      absl::StrCat("go: ", info->go_version.empty() ? "unknown release" : info->go_version, "\n");
  if (!info->symbols.ok()) {
    absl::StrAppend(&o, "unavailable: Go symbols in profiles (CPU): ", info->symbols.message(),
                    "\n");
  }
  if (!info->heap.ok()) {
    absl::StrAppend(&o, "unavailable: heap, allocs: ", info->heap.message(), "\n");
  }
  return o;
}

std::string HeapSource::NativeHealthLines(const ProcessInfo& target) const {
  // Non-Go targets: the heap kind's lines say it all (one sampler).
  absl::StatusOr<GoTargetInfo> info = heap_->TargetInfo(static_cast<pid_t>(target.pid));
  if (!info.ok() || !info->is_go || !heap_->native_enabled()) return "";
  if (!info->c_allocator) {
    return "native_heap: the Go target maps no C library (not cgo): no C allocations to sample\n";
  }
  std::string o;
  for (const std::string& l : heap_->NativeHealthLines("native_heap", true)) {
    absl::StrAppend(&o, l, "\n");
  }
  return o;
}

void HeapSource::WriteMetrics(const std::optional<ProcessInfo>& target, MetricsWriter* w) const {
  if (kind_ != HeapProfileKind::kHeap || native_) return;  // one set for all kinds
  if (target) WriteTargetMetrics(*target, w);
  const HeapProfilerStats h = heap_->stats();
  w->Counter("pprof_sidecar_heap_profiles_total", "Heap/allocs profiles built.", h.profiles);
  w->Counter("pprof_sidecar_heap_profile_errors_total", "Heap/allocs requests that failed.",
             h.errors);
  w->Gauge("pprof_sidecar_heap_buckets", "Go heap profile buckets in the last read.",
           h.last_buckets);
  w->Gauge("pprof_sidecar_heap_read_seconds", "Duration of the last Go heap bucket read.",
           h.last_read_micros / 1e6);
  WriteNativeMetrics(h, w);
}

void HeapSource::WriteTargetMetrics(const ProcessInfo& t, MetricsWriter* w) const {
  absl::StatusOr<GoTargetInfo> info = heap_->TargetInfo(static_cast<pid_t>(t.pid));
  if (!info.ok()) return;
  w->Info("pprof_sidecar_target_info",
          "The current target; go_version is the Go release its executable was built with "
          "(empty: not Go).",
          {{"pid", absl::StrCat(t.pid)}, {"go_version", info->go_version}}, 1);
  w->Gauge("pprof_sidecar_target_heap_available",
           "The target's heap and allocs profiles can be read (Go: its runtime's records are "
           "located and valid).",
           info->heap.ok() ? 1 : 0);
}

void HeapSource::WriteNativeMetrics(const HeapProfilerStats& h, MetricsWriter* w) const {
  const MallocSamplerStats& m = h.native;
  w->Gauge("pprof_sidecar_malloc_sampler_attached", "A malloc sampler is attached to the target.",
           h.native_attached ? 1 : 0);
  w->Counter("pprof_sidecar_malloc_attach_errors_total", "Malloc sampler attach failures.",
             h.native_attach_errors);
  w->Gauge("pprof_sidecar_malloc_probes",
           "Allocator probes attached now (uprobe session links, or uprobes and uretprobes).",
           m.probes);
  w->Counter("pprof_sidecar_malloc_idle_detaches_total",
             "Malloc samplers detached for want of heap/allocs requests (on_request policy).",
             h.native_idle_detaches);
  w->Counter("pprof_sidecar_malloc_stacks_unwound_total",
             "Sampled allocation stacks unwound with CFI from their stack copy.", m.unwound);
  w->Counter("pprof_sidecar_malloc_late_probed_functions_total",
             "Allocator functions probed after the attach (libraries mapped later).",
             h.native_late_probes);
  w->Counter("pprof_sidecar_malloc_calls_total", "Allocation calls seen by the probes.", m.calls);
  w->Counter("pprof_sidecar_malloc_frees_total", "Free calls seen by the probes.", m.frees);
  w->Counter("pprof_sidecar_malloc_sampled_total", "Allocations sampled.", m.recorded);
  w->Gauge("pprof_sidecar_malloc_live_tracked", "Sampled allocations tracked as live.", m.live);
  w->Gauge("pprof_sidecar_malloc_buckets", "Malloc profile (stack, size) buckets.", m.buckets);
  w->CounterFamily("pprof_sidecar_malloc_lost_total",
                   "Malloc sampler events lost or degraded, by reason.", "reason",
                   {{"live_map_full", m.live_full},
                    {"ringbuf_full_alloc", m.ringbuf_drops},
                    {"ringbuf_full_free", m.free_drops},
                    {"stack_error", m.stack_errors},
                    {"stack_copy_error", m.stack_copy_errors},
                    {"pending_full", m.pending_full},
                    {"unmatched_return", m.pending_mismatch},
                    {"bucket_limit", m.bucket_overflow}});
}

absl::Status AddHeapSources(HeapProfiler* heap, ProfileRegistry* registry) {
  for (bool native : {false, true}) {
    for (HeapProfileKind k : {HeapProfileKind::kHeap, HeapProfileKind::kAllocs}) {
      if (absl::Status st = registry->Add(std::make_unique<HeapSource>(heap, k, native));
          !st.ok()) {
        return st;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace pprof_sidecar
