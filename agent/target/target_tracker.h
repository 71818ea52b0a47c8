// Keeps track of the current target process across restarts of the target's container.
//
// Protocol: a background thread checks every `interval` whether the current target (identified by
// pid + start time, so a recycled pid is not mistaken for it) is still alive; if not, it runs
// DiscoverTarget again. Every change (target found, lost, replaced) is reported to `on_change`
// from the tracker's thread; every check that keeps the target to `on_recheck`. With --target_pid
// the pid cannot follow a restart (the new process has another pid); use --target_name or
// auto-discovery for that.
#ifndef PPROF_SIDECAR_AGENT_TARGET_TARGET_TRACKER_H_
#define PPROF_SIDECAR_AGENT_TARGET_TARGET_TRACKER_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "agent/target/target_discovery.h"

namespace pprof_sidecar {

class TargetTracker {
 public:
  using OnChange = std::function<void(const std::optional<ProcessInfo>&)>;
  TargetTracker(DiscoveryOptions opts, absl::Duration interval, OnChange on_change);
  ~TargetTracker();

  // Called from the tracker's thread after every check that kept the same target (not after
  // those that changed it: on_change is). Set before Start().
  void SetOnRecheck(OnChange on_recheck) { on_recheck_ = std::move(on_recheck); }

  void Start();  // runs CheckNow() once synchronously, then starts the thread
  void Stop();   // idempotent
  void CheckNow();

  std::optional<ProcessInfo> current() const;
  // Why there is no target, or how the current one was chosen.
  std::string status_message() const;
  uint64_t changes() const { return changes_.load(); }

 private:
  void Loop();

  const DiscoveryOptions opts_;
  const absl::Duration interval_;
  const OnChange on_change_;
  OnChange on_recheck_;
  mutable std::mutex mu_;
  std::optional<ProcessInfo> current_;
  std::string status_;
  std::atomic<uint64_t> changes_{0};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_TARGET_TARGET_TRACKER_H_
