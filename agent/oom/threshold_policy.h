// When to snapshot the target's heap as its memory approaches the limit (pure logic).
//
// Each threshold (a percentage of the limit) fires once per process (pid and start time: a
// restarted target is a new process with every threshold armed again) when usage reaches it;
// a reading that jumps past several fires only the highest (one snapshot, not one per
// threshold), and the ones below count as passed. A threshold re-arms only when usage falls
// `rearm_gap_percent` points below it and `rearm_after` has passed since it fired, so usage that
// oscillates around a threshold fires it at most once per `rearm_after`. The optional interval
// fires while a limit is known or not, every `interval` per process.
#ifndef PPROF_SIDECAR_AGENT_OOM_THRESHOLD_POLICY_H_
#define PPROF_SIDECAR_AGENT_OOM_THRESHOLD_POLICY_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace pprof_sidecar {

struct ThresholdPolicyOptions {
  std::vector<int> percents = {50, 70, 85, 95};  // ascending, each in (0, 100]
  int rearm_gap_percent = 5;
  absl::Duration rearm_after = absl::Minutes(1);
  absl::Duration interval = absl::ZeroDuration();  // zero: no interval snapshots
};

// "50,70,85,95" -> {50, 70, 85, 95}: ascending, unique, each in 1..100. InvalidArgument else.
absl::StatusOr<std::vector<int>> ParseThresholds(absl::string_view text);

struct SnapshotTrigger {
  std::string reason;  // "50pct" ... or "interval"
  int percent = 0;     // the threshold (0 for interval)
};

class ThresholdPolicy {
 public:
  explicit ThresholdPolicy(ThresholdPolicyOptions opts);
  // One reading of process (pid, start_time). Returns what to snapshot now, if anything.
  std::optional<SnapshotTrigger> Observe(pid_t pid, uint64_t start_time, uint64_t usage,
                                         std::optional<uint64_t> limit, absl::Time now);
  // Starts tracking process (pid, start_time) with the thresholds in `fired` (percent, when) and
  // those below them already passed, e.g. from snapshots a previous run of the agent left.
  void Seed(pid_t pid, uint64_t start_time, const std::vector<std::pair<int, absl::Time>>& fired,
            absl::Time now);
  const ThresholdPolicyOptions& options() const { return opts_; }

 private:
  void Reset(pid_t pid, uint64_t start_time, absl::Time now);

  struct Threshold {
    int percent;
    bool armed = true;
    absl::Time fired = absl::InfinitePast();
  };
  const ThresholdPolicyOptions opts_;
  pid_t pid_ = 0;
  uint64_t start_time_ = 0;
  std::vector<Threshold> thresholds_;
  absl::Time last_interval_ = absl::InfinitePast();
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_OOM_THRESHOLD_POLICY_H_
