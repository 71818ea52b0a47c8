// The kernel's OOM-victim events (bpf/oom_victim.bpf.c): every process the OOM killer chooses,
// reported as it is marked, after SIGKILL is sent and before its memory is reaped, so that a
// last look at the victim can race its exit. Attached without tracefs: tp_btf/mark_victim on
// kernels whose tracepoint passes the task (6.8+), else fentry/mark_oom_victim. Needs CAP_BPF and
// CAP_PERFMON (tracing programs) and kernel BTF.
#ifndef PPROF_SIDECAR_AGENT_SAMPLER_OOM_VICTIM_WATCH_H_
#define PPROF_SIDECAR_AGENT_SAMPLER_OOM_VICTIM_WATCH_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace pprof_sidecar {

struct OomVictim {
  pid_t pid = 0;            // in the agent's pid namespace; 0: not visible there
  pid_t host_pid = 0;       // in the initial pid namespace
  uint64_t start_time = 0;  // clock ticks since boot, as field 22 of /proc/PID/stat
  uint64_t latency_ns = 0;  // from the kernel's mark to the callback
  std::string comm;
};

struct OomVictimWatchOptions {
  bool force_fentry = false;  // tests: the fallback even where tp_btf would work
};

class OomVictimWatch {
 public:
  // Runs on the watch's reader thread; keep it short (it delays the next event).
  using Callback = std::function<void(const OomVictim&)>;
  static absl::StatusOr<std::unique_ptr<OomVictimWatch>> Start(Callback cb,
                                                               OomVictimWatchOptions opts = {});
  ~OomVictimWatch();
  // "tp_btf/mark_victim" or "fentry/mark_oom_victim".
  const std::string& attach_point() const { return attach_point_; }
  uint64_t dropped() const;

 private:
  struct Impl;
  explicit OomVictimWatch(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string attach_point_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLER_OOM_VICTIM_WATCH_H_
