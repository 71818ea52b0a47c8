// /debug/pprof/goroutine for Go targets, read from outside (goroutines.h): debug=0 pprof
// (goroutine/count), debug=1 legacy text, debug=2 the crash-style dump, as Go's net/http/pprof
// serves them. Other targets: Availability says why not.
#ifndef PPROF_SIDECAR_AGENT_GOPROFILE_GOROUTINE_SOURCE_H_
#define PPROF_SIDECAR_AGENT_GOPROFILE_GOROUTINE_SOURCE_H_

#include <atomic>
#include <memory>

#include "agent/goprofile/goroutines.h"
#include "agent/goruntime/go_runtime.h"
#include "agent/registry/profile_source.h"
#include "agent/symbolize/process_symbolizer.h"

namespace pprof_sidecar {

class GoroutineSource : public ProfileSource {
 public:
  // `symbolizer` (names the debug=0 locations) outlives the source.
  GoroutineSource(std::shared_ptr<GoBinaryCache> cache, ProcessSymbolizer* symbolizer);
  const ProfileKindInfo& info() const override { return info_; }
  absl::StatusOr<ProfileResponse> Collect(const ProfileRequest& req) override;
  absl::Status Availability(const std::optional<ProcessInfo>& target) const override;
  void WriteMetrics(const std::optional<ProcessInfo>& target, MetricsWriter* w) const override;

  // The snapshot behind the last Collect's profile (for tests and benchmarks).
  absl::StatusOr<GoroutineSnapshot> Snapshot(pid_t pid, GoProcess* proc);

 private:
  ProfileKindInfo info_;
  std::shared_ptr<GoBinaryCache> cache_;
  ProcessSymbolizer* const symbolizer_;
  std::atomic<uint64_t> profiles_{0}, errors_{0}, retries_{0}, unreadable_{0};
  std::atomic<int64_t> last_read_micros_{0}, last_goroutines_{0};
  std::atomic<uint64_t> thread_stops_{0};
  std::atomic<int64_t> stopped_micros_{0};
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_GOPROFILE_GOROUTINE_SOURCE_H_
