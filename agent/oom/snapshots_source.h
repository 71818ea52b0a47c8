// The "snapshots" profile kind: /debug/pprof/snapshots/ lists the snapshot store (an HTML page
// in the style of Go's index, or JSON with ?format=json or Accept: application/json; links are
// relative to /debug/pprof/snapshots/, the index's link), /debug/pprof/snapshots/<name> is the
// snapshot's pprof file as captured (gzipped protobuf, for `go tool pprof <url>` and curl).
// Needs no current target: snapshots outlive the process they describe. /healthz and /metrics
// carry the flight recorder's lines and counters.
#ifndef PPROF_SIDECAR_AGENT_OOM_SNAPSHOTS_SOURCE_H_
#define PPROF_SIDECAR_AGENT_OOM_SNAPSHOTS_SOURCE_H_

#include "agent/oom/flight_recorder.h"
#include "agent/oom/snapshot_store.h"
#include "agent/registry/profile_source.h"

namespace pprof_sidecar {

class SnapshotsSource : public ProfileSource {
 public:
  // `store` outlives the source; `recorder` may be null (listing only).
  SnapshotsSource(SnapshotStore* store, const FlightRecorder* recorder);
  const ProfileKindInfo& info() const override { return info_; }
  absl::StatusOr<ProfileResponse> Collect(const ProfileRequest& req) override;
  std::string HealthLines(const std::optional<ProcessInfo>& target) const override;
  void WriteMetrics(const std::optional<ProcessInfo>& target, MetricsWriter* w) const override;

 private:
  ProfileResponse ListHtml() const;
  ProfileResponse ListJson() const;

  ProfileKindInfo info_;
  SnapshotStore* const store_;
  const FlightRecorder* const recorder_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_OOM_SNAPSHOTS_SOURCE_H_
