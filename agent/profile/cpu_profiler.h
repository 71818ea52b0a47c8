// On-demand CPU profiling of the current target with any number of concurrent windows.
//
// Protocol: each Collect() call opens its own window; the sampler runs while at least one
// window is open (started by the first, stopped when the last closes; the sampler object, i.e.
// the loaded BPF program, is created when the first target is set and kept) and every sample is
// delivered to every window open at that moment. Each sample is unwound once as it arrives
// (SampleUnwinder) and windows keep only its PCs, so a window costs a few hundred bytes per
// sample whatever the stack copy size. A window ends after its duration, when its client went
// away (dropped), or when it is cut short (the agent stops: the profile of what was sampled is
// still built); the sampler is flushed so that it holds every sample taken until then, and its
// samples are symbolized and encoded. Targets' binaries and unwinding
// tables are loaded when the target is set, not when the first profile is built.
// Each window holds at most max_samples_per_window samples; the excess is counted and reported
// in the profile's comments and in stats().
#ifndef PPROF_SIDECAR_AGENT_PROFILE_CPU_PROFILER_H_
#define PPROF_SIDECAR_AGENT_PROFILE_CPU_PROFILER_H_

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/profile/cpu_profile.h"
#include "agent/sample/cpu_sampler_interface.h"
#include "agent/sample/sample_labeler.h"
#include "agent/symbolize/process_symbolizer.h"

namespace pprof_sidecar {

struct CpuProfilerStats {
  SamplerStats sampler;  // summed over every sampler run so far
  uint64_t windows_started = 0;
  uint64_t windows_active = 0;
  uint64_t samples_dropped_window_full = 0;
  CpuProfileReport profiles;      // the reports of every profile built, summed
  uint64_t samples_labelled = 0;  // delivered with a goroutine's pprof labels
};

// Whether CPU profiles can be taken, and how (for /healthz and /metrics).
struct CpuReadiness {
  bool ready = false;
  std::string reason;   // why not, when not ready
  SamplerInfo sampler;  // how, when ready
};

class CpuProfiler {
 public:
  using SamplerFactory = std::function<absl::StatusOr<std::unique_ptr<CpuSampler>>()>;
  // `unwind_tables` (null: the profiler's own) may be shared with other unwinders of `symbolizer`.
  CpuProfiler(SamplerFactory factory, ProcessSymbolizer* symbolizer, int hz,
              UnwindTableCache* unwind_tables = nullptr);
  ~CpuProfiler();

  // Creates the sampler now (it is ready when created: its programs loaded and attached), so that
  // readiness() tells the truth before the first target and the first profile. Returns why not.
  absl::Status Prepare();
  CpuReadiness readiness() const;

  // Target pids (agent's pid namespace); empty: no target. Only updates the sampler's filter
  // (quick; touches nothing of the targets).
  absl::Status SetTargets(const std::vector<uint32_t>& pids);
  // Opens the targets' binaries and builds their symbol and unwinding tables now rather than in
  // the first window (which would otherwise do it). May take long for a large binary. With a
  // labeler, also asks it what the sampler must record of each target for labels (Go targets)
  // and tells the sampler.
  void Warm(const std::vector<uint32_t>& pids);
  // Samples of targets the labeler gives fields for carry their goroutine's pprof labels (read
  // as samples arrive). Set before the first SetTargets; not owned.
  void SetLabeler(SampleLabeler* labeler) { labeler_ = labeler; }

  // What may end a window before its duration (each polled every 50 ms; unset: never).
  struct WindowEnd {
    // The client went away: the window is dropped (Cancelled).
    std::function<bool()> cancelled;
    // End the window now and return the profile of what was sampled so far; its comments say
    // it was cut short, after how long and why (`cut_short_reason`).
    std::function<bool()> cut_short;
    std::string cut_short_reason = "the agent is shutting down";
  };

  // Samples for `duration` (or until `end` says otherwise), then returns the gzipped profile.
  // Errors: Unavailable if the sampler cannot start (the message names the cause); Cancelled.
  absl::StatusOr<std::string> Collect(absl::Duration duration, const WindowEnd& end,
                                      std::vector<std::string> comments = {});
  absl::StatusOr<std::string> Collect(absl::Duration duration,
                                      const std::function<bool()>& cancelled,
                                      std::vector<std::string> comments = {}) {
    return Collect(duration, WindowEnd{cancelled, nullptr, ""}, std::move(comments));
  }

  CpuProfilerStats stats() const;
  int hz() const { return hz_; }

 private:
  struct Window;
  struct Delivered;
  absl::Status Acquire();              // refcounted sampler start
  absl::Status CreateSamplerLocked();  // with sampler_mu_ held, when sampler_ is null
  void Release();
  void Deliver(const StackSample& s);
  std::vector<SampleTarget> SampleTargetsLocked() const;  // with sampler_mu_ held

  const SamplerFactory factory_;
  ProcessSymbolizer* const symbolizer_;
  const int hz_;

  mutable std::mutex sampler_mu_;  // guards sampler_, users_, targets_, base_stats_
  std::unique_ptr<CpuSampler> sampler_;
  int users_ = 0;
  std::vector<uint32_t> targets_;
  std::map<uint32_t, GoLabelFields> go_fields_;  // targets whose samples carry labels
  SampleLabeler* labeler_ = nullptr;
  SamplerStats base_stats_;    // of samplers discarded after a failed start
  std::string sampler_error_;  // why the last attempt to create the sampler failed

  std::mutex unwind_mu_;  // guards unwinder_
  SampleUnwinder unwinder_;

  mutable std::mutex windows_mu_;
  std::set<Window*> windows_;

  std::atomic<uint64_t> windows_started_{0}, dropped_full_{0}, labelled_{0};
  mutable std::mutex built_mu_;
  CpuProfileReport built_;  // summed over built profiles
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_PROFILE_CPU_PROFILER_H_
