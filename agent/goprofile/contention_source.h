// /debug/pprof/block and /debug/pprof/mutex for Go targets: the runtime's block and mutex
// profile buckets (runtime.bbuckets / runtime.xbuckets: bucket header, stack, blockRecord
// {count float64, cycles int64}) read from the target's memory, in runtime/pprof's formats:
// debug=0 proto with sample types contentions/count and delay/nanoseconds (cycles scaled by the
// TSC frequency, which the agent measures on the same machine), debug=1 text ("--- contention:" /
// "--- mutex:", cycles/second, "cycles count @ pcs"). seconds=N: the difference of two reads N s
// apart, per bucket, as Go's delta profiles.
//
// A target that never called runtime.SetBlockProfileRate / SetMutexProfileFraction records
// nothing: the profile is then empty and says why (comment, text note, /healthz). With the opt-in
// ContentionRateWrite, a seconds=N request on such a target does for its window what those
// setters do: it writes the runtime's rate variable (runtime.blockprofilerate /
// runtime.mutexprofilerate, located like the buckets; refused when they cannot be), and writes the
// old value back when the window ends, unless the target changed it meanwhile. This is the only
// write the agent ever makes to a target; each one is logged and counted. Concurrent windows of a
// kind share one write: the last to end restores. An agent killed during the window leaves the
// rate set (the target then keeps recording, at the cost its own setter call would have had).
#ifndef PPROF_SIDECAR_AGENT_GOPROFILE_CONTENTION_SOURCE_H_
#define PPROF_SIDECAR_AGENT_GOPROFILE_CONTENTION_SOURCE_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/goprofile/go_stack_format.h"
#include "agent/goruntime/go_runtime.h"
#include "agent/registry/profile_source.h"
#include "agent/symbolize/process_symbolizer.h"

namespace pprof_sidecar {

enum class ContentionKind { kBlock, kMutex };

// The opt-in write of a target's profiling rate for a seconds=N window (off by default).
struct ContentionRateWrite {
  bool enabled = false;
  int64_t block_rate_ns = 10000;  // as SetBlockProfileRate(rate): one event per rate ns blocked
  int64_t mutex_fraction = 10;    // as SetMutexProfileFraction(rate): 1 in rate contentions
};

struct ContentionRecord {
  uint64_t bucket = 0;        // runtime address (identity for deltas)
  std::vector<uint64_t> pcs;  // tracebackPCs form (inlined callers expanded)
  int64_t count = 0;          // contentions (at least 1, as runtime.BlockProfile reports)
  int64_t cycles = 0;
};

struct ContentionSnapshot {
  int64_t rate = 0;  // runtime.blockprofilerate (ticks) / runtime.mutexprofilerate (fraction)
  std::vector<ContentionRecord> records;
};

// Link-time addresses of the bucket list head and rate variable of `kind`; NotFound naming them.
absl::StatusOr<std::pair<uint64_t, uint64_t>> LocateContentionVars(const GoBinary& bin,
                                                                   ContentionKind kind);

absl::StatusOr<ContentionSnapshot> ReadContention(MemoryReader& mem, const GoBinary& bin,
                                                  uint64_t bias, ContentionKind kind);

// TSC ticks per second of this machine (what Go's cputicks count on amd64), measured once.
int64_t CyclesPerSecond();

class ContentionSource : public ProfileSource {
 public:
  // `symbolizer` (names the debug=0 locations) outlives the source.
  ContentionSource(ContentionKind kind, std::shared_ptr<GoBinaryCache> cache,
                   ProcessSymbolizer* symbolizer, ContentionRateWrite write = {});
  const ProfileKindInfo& info() const override { return info_; }
  absl::StatusOr<ProfileResponse> Collect(const ProfileRequest& req) override;
  absl::Status Availability(const std::optional<ProcessInfo>& target) const override;
  void WriteMetrics(const std::optional<ProcessInfo>& target, MetricsWriter* w) const override;

 private:
  absl::StatusOr<ContentionSnapshot> Read(const GoProcess& p);
  // The rate variable's value that enables this kind as configured.
  uint64_t EnabledRate() const;
  // Writes the enabled rate into `p`'s rate variable, or joins the window that did; false (and
  // *why) if nothing was written for this window.
  bool BeginRateWindow(GoProcess& p, std::string* why);
  // Ends a window BeginRateWindow started: the last one restores the old value.
  void EndRateWindow(GoProcess& p);

  ContentionKind kind_;
  ProfileKindInfo info_;
  std::shared_ptr<GoBinaryCache> cache_;
  ProcessSymbolizer* const symbolizer_;
  const ContentionRateWrite write_;
  std::atomic<uint64_t> profiles_{0}, errors_{0}, rate_writes_{0};
  std::mutex write_mu_;  // guards the fields below
  int writers_ = 0;      // windows sharing the write in effect
  pid_t write_pid_ = 0;
  uint64_t write_addr_ = 0, write_old_ = 0, write_value_ = 0;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_GOPROFILE_CONTENTION_SOURCE_H_
