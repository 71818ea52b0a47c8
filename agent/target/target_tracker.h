// Keeps track of the current target process across restarts of the target's container.
//
// Protocol: a checker thread checks every `interval` whether the current target (identified by
// pid + start time, so a recycled pid is not mistaken for it) is still alive; if not, it runs
// DiscoverTarget again. The checker only reads /proc/PID/stat and the /proc/PID/exe link, which
// nothing the target does can block, so target exits and replacements are always noticed (and
// shown by current()/status_message()). Every change (target found, lost, replaced, or exec'd
// into another program: same pid and start time, new executable or comm) is reported to
// `on_change`; every check that keeps the target to `on_recheck`. Both run on a separate worker
// thread (they open the target's binaries and attach probes), except those of the first check,
// which Start() runs before returning. Reports are coalesced: if the worker is still busy, it
// next sees only the latest target.
//
// With --target_pid (DiscoveryOptions::target_pid) the tracker remembers the start time of the
// first process it found at that pid; once that process exits the target is gone for good,
// even when another process gets the same pid (the README's "does not follow restarts"); use
// --target_name or auto-discovery to follow restarts.
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

  // Called after every check that kept the same target (not after those that changed it:
  // on_change is). Set before Start().
  void SetOnRecheck(OnChange on_recheck) { on_recheck_ = std::move(on_recheck); }
  // Runs on the checker thread with every new target *before* current() returns it, so that what
  // it sets up (the CPU sampler's target filter) is in place when a request sees the target. It
  // must be quick and must not touch the target's files or memory. Set before Start().
  void SetBeforePublish(OnChange before_publish) { before_publish_ = std::move(before_publish); }

  // Runs one check and its callbacks synchronously, then starts the checker and worker threads.
  void Start();
  void Stop();  // idempotent; waits for a callback in progress
  // One check (the checker thread's work); its callbacks are queued for the worker.
  void CheckNow();
  // Waits until the worker has run the callbacks of every check so far (tests). False on
  // timeout.
  bool WaitCallbacks(absl::Duration timeout);

  std::optional<ProcessInfo> current() const;
  // Why there is no target, or how the current one was chosen.
  std::string status_message() const;
  uint64_t changes() const { return changes_.load(); }

 private:
  void CheckLoop();
  void WorkLoop();
  // Runs the pending callbacks, if any; true if it ran one. `lock` holds work_mu_.
  bool RunPending(std::unique_lock<std::mutex>& lock);
  // The steps of CheckNow, on the checker thread (the only writer of current_).
  // Hands a check's result to the worker: a change (on_change, replacing a pending recheck) or
  // a recheck (on_recheck, unless a change is pending).
  void Queue(bool change, const std::optional<ProcessInfo>& t);
  // True if `cur` is still the target (same pid and start time, alive): queues a recheck, or
  // publishes and queues the change if it exec'd another program. False: rediscover.
  bool RecheckCurrent(const ProcessInfo& cur);
  // Runs discovery (pinning --target_pid's start time) and the readability check; the target
  // found, if any, and in *status why (or why not, or a warning).
  std::optional<ProcessInfo> Rediscover(std::string* status);
  // Makes `next` current with `status` (before_publish_ first if the target changed), logs a
  // change of either, and queues its callback.
  void Publish(const std::optional<ProcessInfo>& next, const std::string& status);

  DiscoveryOptions opts_;  // target_start_time is pinned by the checker (see above)
  const absl::Duration interval_;
  OnChange on_change_;
  OnChange on_recheck_;
  OnChange before_publish_;

  mutable std::mutex mu_;  // guards current_, status_
  std::optional<ProcessInfo> current_;
  std::string status_;
  std::atomic<uint64_t> changes_{0};

  std::mutex work_mu_;  // guards the mailbox below
  std::condition_variable work_cv_;
  bool change_pending_ = false;
  std::optional<ProcessInfo> change_;
  bool recheck_pending_ = false;
  std::optional<ProcessInfo> recheck_;
  bool working_ = false;
  uint64_t queued_ = 0, done_ = 0;  // checks whose callbacks were queued / have run

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread checker_, worker_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_TARGET_TARGET_TRACKER_H_
