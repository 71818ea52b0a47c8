// Serves heap and allocs profiles of a target process on request.
//
// Go targets: the runtime's own sampled heap profile is read from the target's memory (see
// go_heap.h). Nothing is attached to the target, so it costs the target nothing in steady
// state; a read costs one process_vm_readv per bucket plus a couple of words.
//
// Published cycle semantics are Go's: inuse_* is as of the last completed GC (allocations since
// then are not in the profile yet). Go's `gc=1` runs a GC first; a GC cannot be forced from
// outside the process, so here gc=1 is accepted and only noted in the profile's comments: the
// profile is the one published by the target's last GC, as with gc=0 in Go.
//
// Other targets (C, C++, anything that is not Go), once EnableNative() is called: a malloc
// sampler (agent/sampler/malloc_sampler.h) attached to the target, when the policy
// (NativeHeapOptions) says:
//   - kOnRequest (the default): at the first heap/allocs request for the target, kept while
//     requests keep coming, detached once none came for `idle_detach`. Nobody pays for probes
//     while nobody asks. The request that attaches sees only what was allocated after it started:
//     with seconds=N the delta is complete; without, the profile is (nearly) empty and says so.
//   - kAlways: attached as soon as the target is known (SetTarget), kept while it exists.
// Either way the probes are detached when the target changes or exits, and inuse_* and alloc_*
// cover allocations since the attach time (named in the profile's comments with the policy).
//
// The C allocations of any target, Go included (HeapRequest::native): the same malloc sampler,
// for a Go program that maps a C library (cgo) its C code's malloc & co. For Go targets it is
// attached only on request (whatever the policy, unless kOff) and detached after `idle_detach`
// without one; their heap/allocs stay the Go runtime's own.
#ifndef PPROF_SIDECAR_AGENT_HEAP_HEAP_PROFILER_H_
#define PPROF_SIDECAR_AGENT_HEAP_HEAP_PROFILER_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "agent/goruntime/go_runtime.h"
#include "agent/heap/go_heap.h"
#include "agent/heap/heap_profile.h"
#include "agent/heap/malloc_profile_state.h"
#include "agent/symbolize/process_symbolizer.h"

namespace pprof_sidecar {

struct HeapRequest {
  HeapProfileKind kind = HeapProfileKind::kHeap;
  // Zero: the current profile. Positive: a delta profile (second read minus first), as Go's
  // net/http/pprof serves ?seconds=N for heap and allocs.
  absl::Duration delta = absl::ZeroDuration();
  bool gc = false;  // ?gc=1: cannot force a GC from outside; noted in the comments
  // The target's C allocations from the malloc sampler, Go target or not (native_heap,
  // native_allocs). False: the Go runtime's records for a Go target, the sampler for others.
  bool native = false;
  std::vector<std::string> comments;
  // A delta window ends early when this returns true (polled every 50 ms): the delta so far is
  // returned, its comments say it was cut short and why (`cut_short_reason`).
  std::function<bool()> cut_short;
  std::string cut_short_reason = "the agent is shutting down";
  // The client went away: the delta window is dropped (Cancelled).
  std::function<bool()> cancelled;
};

struct HeapProfilerStats {
  uint64_t profiles = 0;           // profiles built
  uint64_t errors = 0;             // requests that failed
  uint64_t located_by_symtab = 0;  // binaries whose runtime variables came from .symtab
  uint64_t located_by_code = 0;    // ... from decoding runtime functions (stripped binaries)
  uint64_t last_buckets = 0;       // buckets in the last read
  int64_t last_read_micros = 0;    // duration of the last bucket read
  // Malloc sampler (non-Go targets).
  bool native_attached = false;       // a sampler is attached now
  uint64_t native_attaches = 0;       // samplers started
  uint64_t native_idle_detaches = 0;  // samplers detached for want of requests (kOnRequest)
  uint64_t native_attach_errors = 0;
  uint64_t native_late_probes = 0;  // functions probed after the attach (mapped later)
  MallocSamplerStats native;        // of the current sampler
};

// What the agent can read of a Go target's runtime, for /healthz and /metrics.
struct GoTargetInfo {
  bool is_go = false;
  std::string go_version;  // "go1.27.4" (build info); empty if unknown
  absl::Status symbols;    // not OK: Go functions cannot be named (CPU profiles lose them)
  absl::Status heap;       // not OK: why /debug/pprof/heap and /allocs cannot be served
  // A Go target that maps a C library or allocator library (cgo): its C allocations can be
  // sampled (HeapRequest::native).
  bool c_allocator = false;
};

// Starts a malloc sampler for a pid (StartMallocSampler in production, a fake in tests).
using NativeHeapFactory =
    std::function<absl::StatusOr<std::unique_ptr<NativeHeapSource>>(pid_t pid)>;

// When malloc probes are attached to a non-Go target (see the file comment).
enum class MallocPolicy { kOff, kOnRequest, kAlways };
// "off", "on_request", "always".
const char* MallocPolicyName(MallocPolicy p);
// Parses MallocPolicyName's names ("true"/"false", the flag's former values, mean always/off).
absl::StatusOr<MallocPolicy> ParseMallocPolicy(absl::string_view s);

struct NativeHeapOptions {
  MallocPolicy policy = MallocPolicy::kOnRequest;
  // kOnRequest: probes are detached when no heap/allocs request came for this long.
  absl::Duration idle_detach = absl::Minutes(10);
  // Shown by /healthz before any attach, e.g. a capability the agent lacks (empty: none).
  std::string prerequisite_note;
};

class HeapProfiler {
 public:
  // Go targets' binaries come from `go_binaries`, the agent's one cache of them (its own if null).
  explicit HeapProfiler(ProcessSymbolizer* symbolizer,
                        std::shared_ptr<GoBinaryCache> go_binaries = nullptr,
                        GoHeapReadLimits limits = {});
  ~HeapProfiler();

  // The gzipped pprof profile of `pid`. Errors: NotFound (process gone), Unimplemented (not a Go
  // program and no malloc sampler; with req.native: malloc profiling off, or a Go program that
  // maps no C allocator), FailedPrecondition (memory profiling disabled in the target),
  // PermissionDenied (cannot read its memory), DataLoss (inconsistent buckets), Aborted (the target
  // was replaced during a delta window).
  absl::StatusOr<std::string> Collect(pid_t pid, const HeapRequest& req);

  // One read of the Go heap profile buckets of `pid` (runtime variables located, load bias
  // applied). `how` (optional) receives how the variables were found.
  absl::StatusOr<HeapSnapshot> ReadGoSnapshot(pid_t pid, std::string* how = nullptr,
                                              const GoHeapReadLimits* limits = nullptr);

  // Serves non-Go targets from malloc samplers made by `factory`, attached per `options`. Call
  // before use. kOff is the same as not calling it.
  void EnableNative(NativeHeapFactory factory, NativeHeapOptions options = {});
  // Whether EnableNative was called with a policy other than kOff.
  bool native_enabled() const { return static_cast<bool>(native_factory_); }
  // What /healthz says of malloc profiling: the policy, whether probes are attached now (since
  // when) and the last attach error, each line starting with `what` (e.g. "heap (non-Go
  // target)"); `go_target`: the policy that applies to a Go target's C allocations. Empty when
  // EnableNative was not called.
  std::vector<std::string> NativeHealthLines(absl::string_view what = "heap (non-Go target)",
                                             bool go_target = false) const;
  // The current target (nullopt: none). kAlways: attaches a malloc sampler to a non-Go target now
  // (attach errors are logged to stderr and answered on the next request). Detaches the previous
  // target's. Call it again with the same pid on every check of the target (the agent does,
  // every --rediscover_interval_ms): that probes allocators mapped since the attach (re-reading
  // the target's maps at most 0.1 % of the time: a 1 ms read every second at most), retries a
  // failed kAlways attach (backing off from 1 s to 64 s) and, kOnRequest, detaches probes idle
  // for NativeHeapOptions::idle_detach (never while a request is running). No-op without
  // EnableNative. Thread-safe.
  void SetTarget(std::optional<pid_t> pid);

  HeapProfilerStats stats() const;

  // The Go release of `pid`'s executable and which profiles of it can be read. The heap check is
  // a real read of the first buckets (a bounded probe, whatever the target's profile size), done
  // at most every 10 s per process (callers may poll).
  absl::StatusOr<GoTargetInfo> TargetInfo(pid_t pid);

 private:
  // The sampler attached to `pid`, attaching one if needed (`*attached` set when this call did).
  absl::StatusOr<std::shared_ptr<NativeHeapSource>> NativeFor(pid_t pid, bool* attached);
  // kOnRequest, or a Go target: detaches the current sampler when requests stopped. Under
  // native_mu_.
  bool MaybeDetachIdle(pid_t pid);
  // Probes of `pid` are attached only on request: policy kOnRequest, or a Go target.
  bool OnRequestFor(pid_t pid);
  // The error of a failed attach for a request: says what the target is and why.
  absl::Status NativeAttachError(pid_t pid, const absl::Status& st);
  // Comments of a native profile: policy, attach time, counters.
  // `go_target`: the C allocations of a Go program (on request whatever the policy).
  void AddNativeComments(const NativeHeapSource& src, bool attached_now, bool go_target,
                         const HeapRequest& req, HeapProfileParams* params) const;
  absl::StatusOr<std::string> CollectNative(pid_t pid, const HeapRequest& req);
  // Waits for req.delta, or less if the request is cut short (noted in params) or cancelled.
  absl::Status SleepDelta(const HeapRequest& req, HeapProfileParams* params);

  // The executable `pid` runs (the Go-runtime reader's cache).
  absl::StatusOr<std::shared_ptr<const GoExecutable>> Exe(pid_t pid) {
    return go_binaries_->Executable(pid);
  }
  // The heap profile's variables (link-time) of `exe`, which `pid` runs; errors as
  // ReadGoSnapshot's.
  absl::StatusOr<GoHeapVars> HeapVars(pid_t pid, const GoExecutable& exe);
  // ReadGoSnapshot; `proc` (if not null) gets the process the buckets were read from.
  absl::StatusOr<HeapSnapshot> ReadGo(pid_t pid, std::string* how, const GoHeapReadLimits* limits,
                                      GoProcess* proc);

  ProcessSymbolizer* const symbolizer_;
  const std::shared_ptr<GoBinaryCache> go_binaries_;
  const GoHeapReadLimits limits_;
  mutable std::mutex mu_;
  std::atomic<uint64_t> profiles_{0}, errors_{0}, by_symtab_{0}, by_code_{0}, last_buckets_{0};
  std::atomic<int64_t> last_read_micros_{0};
  pid_t info_pid_ = 0;  // TargetInfo's last answer (guarded by mu_)
  absl::Time info_time_;
  GoTargetInfo info_;

  NativeHeapFactory native_factory_;
  NativeHeapOptions native_opts_;
  std::mutex native_mu_;                      // serializes attach/detach
  std::shared_ptr<NativeHeapSource> native_;  // guarded by mu_ (read) and native_mu_ (swap)
  std::atomic<uint64_t> native_attaches_{0}, native_attach_errors_{0}, native_late_probes_{0},
      native_idle_detaches_{0};
  // Requests for a native profile: running now, and when the last one started or ended.
  std::atomic<int> native_inflight_{0};
  std::atomic<int64_t> native_last_request_ns_{0};  // absl::ToUnixNanos
  absl::Status native_last_error_;                  // last attach failure (guarded by mu_)
  // Retry schedule of a failed attach, and when the attached sampler may look for new
  // mappings next (guarded by native_mu_).
  pid_t failed_pid_ = 0;
  absl::Time next_retry_, next_recheck_;
  absl::Duration retry_backoff_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_HEAP_HEAP_PROFILER_H_
