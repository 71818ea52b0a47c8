// /debug/pprof/threadcreate for Go targets: the creation stack the runtime keeps for every M
// (runtime.allm, linked through m.alllink; m.createstack), as runtime.ThreadCreateProfile
// returns them, in Go's formats (debug=0 proto threadcreate/count, debug=1 text).
#ifndef PPROF_SIDECAR_AGENT_GOPROFILE_THREADCREATE_SOURCE_H_
#define PPROF_SIDECAR_AGENT_GOPROFILE_THREADCREATE_SOURCE_H_

#include <atomic>
#include <memory>
#include <vector>

#include "agent/goprofile/go_stack_format.h"
#include "agent/goruntime/go_runtime.h"
#include "agent/registry/profile_source.h"
#include "agent/symbolize/process_symbolizer.h"

namespace pprof_sidecar {

// Creation stacks of every M, newest first (allm's order); empty for the main thread's.
absl::StatusOr<std::vector<CountStack>> ReadThreadCreateStacks(MemoryReader& mem,
                                                               const GoBinary& bin, uint64_t bias);

class ThreadCreateSource : public ProfileSource {
 public:
  // `symbolizer` (names the debug=0 locations) outlives the source.
  ThreadCreateSource(std::shared_ptr<GoBinaryCache> cache, ProcessSymbolizer* symbolizer);
  const ProfileKindInfo& info() const override { return info_; }
  absl::StatusOr<ProfileResponse> Collect(const ProfileRequest& req) override;
  absl::Status Availability(const std::optional<ProcessInfo>& target) const override;
  void WriteMetrics(const std::optional<ProcessInfo>& target, MetricsWriter* w) const override;

 private:
  ProfileKindInfo info_;
  std::shared_ptr<GoBinaryCache> cache_;
  ProcessSymbolizer* const symbolizer_;
  std::atomic<uint64_t> profiles_{0}, errors_{0};
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_GOPROFILE_THREADCREATE_SOURCE_H_
