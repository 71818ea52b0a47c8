// /debug/pprof/profile: the CPU profile kind, over a CpuProfiler. Holds a window of `seconds`
// (Go's default 30); gates the agent's readiness: /healthz is 503 while no CPU profile can be
// taken. Its /metrics are the sampler's and the profile builder's counters.
#ifndef PPROF_SIDECAR_AGENT_PROFILE_CPU_SOURCE_H_
#define PPROF_SIDECAR_AGENT_PROFILE_CPU_SOURCE_H_

#include "agent/profile/cpu_profiler.h"
#include "agent/registry/profile_source.h"

namespace pprof_sidecar {

class CpuSource : public ProfileSource {
 public:
  // `default_seconds`: the window without ?seconds (Go: 30).
  CpuSource(CpuProfiler* cpu, int default_seconds = 30);
  const ProfileKindInfo& info() const override { return info_; }
  absl::StatusOr<ProfileResponse> Collect(const ProfileRequest& req) override;
  absl::Status Availability(const std::optional<ProcessInfo>& target) const override;
  std::string HealthLines(const std::optional<ProcessInfo>& target) const override;
  void WriteMetrics(const std::optional<ProcessInfo>& target, MetricsWriter* w) const override;

 private:
  void WriteSamplerMetrics(const CpuProfilerStats& c, MetricsWriter* w) const;
  void WriteUnwindMetrics(const CpuProfilerStats& stats, MetricsWriter* w) const;

  CpuProfiler* const cpu_;
  ProfileKindInfo info_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_PROFILE_CPU_SOURCE_H_
