// The OOM flight recorder: watches the target's memory against its limit (memory_watch.h) and,
// when the threshold policy says so (threshold_policy.h), captures the target's heap profile,
// and its goroutine profile when a "goroutine" kind is registered, through the profile registry
// (the same sources /debug/pprof/heap serves: Go targets' runtime buckets, other targets' malloc
// sampler) into the snapshot store. When the kernel chooses the target as an OOM victim
// (OnOomVictim, from the privileged layer's event), one last heap capture is tried at once,
// racing the kernel's teardown of its memory; the outcome is counted either way.
//
// Costs between snapshots: one reading (three preads) per poll interval on the recorder's own
// thread. Captures are serialized. Thread-safe.
#ifndef PPROF_SIDECAR_AGENT_OOM_FLIGHT_RECORDER_H_
#define PPROF_SIDECAR_AGENT_OOM_FLIGHT_RECORDER_H_

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/oom/memory_watch.h"
#include "agent/oom/snapshot_store.h"
#include "agent/oom/threshold_policy.h"
#include "agent/registry/profile_registry.h"
#include "agent/target/target_discovery.h"

namespace pprof_sidecar {

struct FlightRecorderOptions {
  ThresholdPolicyOptions policy;
  absl::Duration poll_interval = absl::Milliseconds(200);
  // Near the limit (usage within 10 points of the highest threshold: 85 % by default) the heap
  // is also read into memory every `recent_interval` (zero: never). When the at-kill capture finds
  // the process already gone, this most recent read is saved as the "oom-kill" snapshot instead,
  // with its own time (and comments saying so).
  absl::Duration recent_interval = absl::Seconds(1);
  MemoryWatcherOptions watcher;
};

struct FlightRecorderStats {
  uint64_t polls = 0, read_errors = 0;
  std::map<std::string, uint64_t> capture_failures;  // by reason ("heap: ...")
  uint64_t oom_events = 0;                           // OOM victims seen that were the target
  uint64_t oom_events_other = 0;                     // other processes chosen as victims
  uint64_t oom_snapshots = 0;         // at-kill heap snapshots read from the dying process
  uint64_t oom_snapshots_recent = 0;  // ... saved from the recent read instead (it was gone)
  uint64_t recent_reads = 0;          // heap reads kept in memory near the limit
  uint64_t oom_snapshot_failures = 0;
  std::optional<MemoryReading> last;  // the last reading of the current target
  pid_t last_pid = 0;
  std::string last_oom_error;
};

class FlightRecorder {
 public:
  using TargetFn = std::function<std::optional<ProcessInfo>()>;
  // `store` and `registry` outlive the recorder; `registry` is read at capture time (sources
  // registered later are used).
  FlightRecorder(FlightRecorderOptions opts, SnapshotStore* store, const ProfileRegistry* registry,
                 TargetFn target);
  ~FlightRecorder();

  void Start();
  void Stop();
  // One watch step at `now` (what the thread does every poll interval).
  void Poll(absl::Time now);
  // The kernel chose process `pid` (agent's pid namespace; 0 if not visible there) started at
  // `start_time` (clock ticks since boot, as /proc/PID/stat) as an OOM victim.
  void OnOomVictim(pid_t pid, uint64_t start_time);
  // Captures the target's profiles now under `reason`. OK if the heap profile was stored.
  absl::Status Capture(const ProcessInfo& t, const std::string& reason, const MemoryReading& r);

  // Whether the OOM-victim event is attached (the privileged layer's answer), for /healthz.
  void SetOomEventStatus(absl::Status st);

  FlightRecorderStats stats() const;
  // The age of the recent read at the last kill that fell back to it.
  absl::Duration last_recent_age() const;
  std::string HealthLines() const;
  void WriteMetrics(MetricsWriter* w) const;

 private:
  void Loop();
  // One profile of `kind` for `t` (its comments name `reason`, `r` and `when`).
  absl::StatusOr<std::string> CollectKind(const char* kind, const ProcessInfo& t,
                                          const std::string& reason, const MemoryReading& r,
                                          absl::Time when);
  // The first reading of a process: thresholds its snapshots in the store already passed (an
  // earlier run of the agent) stay disarmed.
  void SeedFromStore(const ProcessInfo& t, absl::Time now);
  // Reads the heap into recent_ when due (Poll's thread).
  void MaybeReadRecent(const ProcessInfo& t, const MemoryReading& r, absl::Time now);
  // Saves recent_ as the at-kill snapshot of `t`, if it is of `t`.
  absl::Status SaveRecent(const ProcessInfo& t);

  struct Recent {
    ProcessInfo target;
    MemoryReading reading;
    absl::Time time;
    std::string profile;
  };

  const FlightRecorderOptions opts_;
  SnapshotStore* const store_;
  const ProfileRegistry* const registry_;
  const TargetFn target_;
  MemoryWatcher watcher_;   // Poll's thread only
  ThresholdPolicy policy_;  // Poll's thread only
  std::mutex capture_mu_;   // one capture at a time
  mutable std::mutex mu_;
  FlightRecorderStats stats_;                      // guarded by mu_
  std::optional<ProcessInfo> last_target_;         // guarded by mu_
  std::optional<Recent> recent_;                   // guarded by mu_
  absl::Duration last_recent_age_;                 // guarded by mu_
  absl::Time next_recent_ = absl::InfinitePast();  // Poll's thread only
  // The process whose thresholds were seeded from the store (Poll's thread only).
  pid_t seeded_pid_ = 0;
  uint64_t seeded_start_ = 0;
  absl::Status oom_event_status_ = absl::UnavailableError("not attached");  // guarded by mu_
  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_OOM_FLIGHT_RECORDER_H_
