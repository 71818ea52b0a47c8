// Finding the process to profile inside the pod's shared pid namespace.
//
// Rule (documented in the README): candidates are all processes visible in /proc except
//   - kernel threads (no /proc/PID/exe),
//   - pid 1 when it is a pause/init process (pause, tini, dumb-init, catatonit, init, systemd),
//   - the agent itself and its ancestors,
//   - known sidecars (kube-rbac-proxy, envoy, pilot-agent, linkerd2-proxy, ...).
// With --target_pid the pid is used as given (it must exist). With --target_name the candidates
// whose comm or exe basename fully matches the RE2-free std::regex are kept. When several remain,
// the one with the largest resident set wins (ties: the oldest), and the choice is logged with the
// list of the others.
#ifndef PPROF_SIDECAR_AGENT_TARGET_TARGET_DISCOVERY_H_
#define PPROF_SIDECAR_AGENT_TARGET_TARGET_DISCOVERY_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pprof_sidecar {

struct ProcessInfo {
  pid_t pid = 0;
  pid_t ppid = 0;
  std::string comm;
  std::string exe;          // readlink(/proc/PID/exe), may end in " (deleted)"
  uint64_t start_time = 0;  // field 22 of /proc/PID/stat (clock ticks since boot): identity
  uint64_t rss_pages = 0;
  char state = '?';  // field 3 of /proc/PID/stat: R, S, D, Z (zombie: exited, not reaped), ...
};

// Reads /proc/<pid>/{stat,exe}. NotFound if the process is gone.
absl::StatusOr<ProcessInfo> ReadProcessInfo(pid_t pid, const std::string& proc_root = "/proc");

// OK if the agent can read the target's /proc/<pid>/maps and exe link, which symbolization needs
// (reading another user's maps, exe and memory takes CAP_SYS_PTRACE). NotFound if the process
// exited meanwhile (gone, or a zombie: its maps are empty). Otherwise PermissionDenied (or the
// open error) with a message that names the missing capability.
absl::Status CheckTargetReadable(pid_t pid, const std::string& proc_root = "/proc");

struct DiscoveryOptions {
  pid_t target_pid = 0;     // 0: not set
  // With target_pid: the start time (ProcessInfo::start_time) the process must have, so that
  // another process reusing the pid is not taken for it. 0: any (the first one seen).
  uint64_t target_start_time = 0;
  std::string target_name;  // "": not set
  pid_t self_pid = 0;       // 0: getpid()
  std::string proc_root = "/proc";
};

struct Discovery {
  ProcessInfo target;
  std::vector<ProcessInfo> others;  // other candidates that were not chosen (ambiguous case)
  std::string explanation;          // human-readable: why this one
};

// Applies the rule above; processes that exited (zombies) never qualify. NotFound with a clear
// message when nothing qualifies.
absl::StatusOr<Discovery> DiscoverTarget(const DiscoveryOptions& opts);

// True for names of pause/init processes that sit at pid 1 of a pod.
bool IsPauseOrInit(const std::string& comm);
// True for well-known sidecar processes that are never targets.
bool IsKnownSidecar(const std::string& comm);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_TARGET_TARGET_DISCOVERY_H_
