#include "agent/oom/threshold_policy.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pprof_sidecar {

absl::StatusOr<std::vector<int>> ParseThresholds(absl::string_view text) {
  std::vector<int> out;
  if (text.empty()) return out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 1 || v > 100 || (!out.empty() && v <= out.back())) {
      return absl::InvalidArgumentError(
          absl::StrCat("thresholds \"", text,
                       "\": expected ascending integer percentages in 1..100, e.g. 50,70,85,95"));
    }
    out.push_back(v);
  }
  return out;
}

ThresholdPolicy::ThresholdPolicy(ThresholdPolicyOptions opts) : opts_(std::move(opts)) {}

void ThresholdPolicy::Reset(pid_t pid, uint64_t start_time, absl::Time now) {
  pid_ = pid;
  start_time_ = start_time;
  thresholds_.clear();
  for (int p : opts_.percents) thresholds_.push_back(Threshold{p});
  last_interval_ = now;  // the first interval snapshot comes one interval after the start
}

void ThresholdPolicy::Seed(pid_t pid, uint64_t start_time,
                           const std::vector<std::pair<int, absl::Time>>& fired, absl::Time now) {
  Reset(pid, start_time, now);
  for (const auto& [percent, when] : fired) {
    for (Threshold& t : thresholds_) {
      if (t.percent <= percent) {  // the ones below count as passed, as after a jump
        t.armed = false;
        t.fired = std::max(t.fired, when);
      }
    }
  }
}

std::optional<SnapshotTrigger> ThresholdPolicy::Observe(pid_t pid, uint64_t start_time,
                                                        uint64_t usage,
                                                        std::optional<uint64_t> limit,
                                                        absl::Time now) {
  if (pid != pid_ || start_time != start_time_ || thresholds_.size() != opts_.percents.size()) {
    Reset(pid, start_time, now);
  }
  std::optional<SnapshotTrigger> out;
  if (limit && *limit > 0) {
    const double pct = 100.0 * static_cast<double>(usage) / static_cast<double>(*limit);
    Threshold* fire = nullptr;
    for (Threshold& t : thresholds_) {
      if (!t.armed && pct < t.percent - opts_.rearm_gap_percent &&
          now - t.fired >= opts_.rearm_after) {
        t.armed = true;
      }
      if (pct >= t.percent && t.armed) fire = &t;
    }
    if (fire != nullptr) {
      for (Threshold& t : thresholds_) {
        if (t.percent <= fire->percent && t.armed) {
          t.armed = false;
          t.fired = now;
        }
      }
      out = SnapshotTrigger{absl::StrCat(fire->percent, "pct"), fire->percent};
    }
  }
  if (opts_.interval > absl::ZeroDuration() && now - last_interval_ >= opts_.interval) {
    last_interval_ = now;
    if (!out) out = SnapshotTrigger{"interval", 0};
  }
  return out;
}

}  // namespace pprof_sidecar
