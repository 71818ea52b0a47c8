// The target's memory and the limit it will be OOM-killed at, as its container sees them.
//
// The limit is the memory cgroup's: /proc/PID/cgroup names the target's cgroup (v2: the "0::"
// line; v1: the line whose controllers include "memory"), whose files are looked up first in the
// target's own view (/proc/PID/root/sys/fs/cgroup, where a container sees its own cgroup, also at
// the mount's root with a cgroup namespace or a v1 bind mount) and then in the agent's
// (/sys/fs/cgroup). v2: memory.max and memory.current; v1: memory.limit_in_bytes and
// memory.usage_in_bytes. "max" and values >= 2^62 (v1's "unlimited" is the page-rounded
// LONG_MAX) mean no limit. When the cgroup sets none, the limit given by the pod spec
// (--target_memory_limit_bytes, from the container's resources.limits.memory through the
// downward API) is used; usage is then the cgroup's if readable, else the process's RSS.
// The files are opened once per process and re-read with pread: a reading costs three syscalls.
// Parsing is pure (fixture trees in tests); the reader needs the rights to read /proc/PID/root
// (CAP_SYS_PTRACE for another user's process).
#ifndef PPROF_SIDECAR_AGENT_OOM_MEMORY_WATCH_H_
#define PPROF_SIDECAR_AGENT_OOM_MEMORY_WATCH_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pprof_sidecar {

// The target's memory cgroup as /proc/PID/cgroup names it.
struct CgroupRef {
  bool v2 = false;
  std::string path;  // "/kubepods/..." (always starts with '/')
  // The path leads up out of the reader's cgroup namespace ("/../sibling.scope": the agent's
  // container has a namespace of its own): only the target's own view can be used.
  bool outside_namespace = false;
};

// Parses /proc/PID/cgroup: the v1 memory controller's line if there is one (a v1 or hybrid host
// enforces limits there), else the v2 "0::" line. NotFound if neither (or a path that is not
// absolute, or has "." components or ".." after other components).
absl::StatusOr<CgroupRef> ParseProcCgroup(absl::string_view text);

// A limit file's value: nullopt for "max" and for values >= 2^62 (no limit). InvalidArgument if
// it is not a number.
absl::StatusOr<std::optional<uint64_t>> ParseMemoryLimit(absl::string_view text);
// A usage file's value (bytes). InvalidArgument if it is not a number.
absl::StatusOr<uint64_t> ParseMemoryUsage(absl::string_view text);

struct MemoryReading {
  uint64_t usage = 0;              // bytes charged to the cgroup (RSS without a readable cgroup)
  std::optional<uint64_t> limit;   // bytes; nullopt: no limit known
  uint64_t rss = 0;                // the process's resident set (bytes)
  std::string limit_source;        // "cgroup v1 <dir>", "cgroup v2 <dir>", "flag", ""
  bool usage_from_cgroup = false;  // false: usage is the RSS
};

struct MemoryWatcherOptions {
  std::string proc_root = "/proc";
  std::string cgroup_root = "/sys/fs/cgroup";  // the agent's own view
  uint64_t flag_limit = 0;                     // --target_memory_limit_bytes (0: none)
};

// Reads one process's memory, keeping its files open across readings. Not thread-safe.
class MemoryWatcher {
 public:
  explicit MemoryWatcher(MemoryWatcherOptions opts) : opts_(std::move(opts)) {}
  ~MemoryWatcher() { Close(); }
  MemoryWatcher(const MemoryWatcher&) = delete;
  MemoryWatcher& operator=(const MemoryWatcher&) = delete;

  // The reading of `pid` (whose start time is `start_time`: a new process reopens its files).
  // NotFound if the process is gone.
  absl::StatusOr<MemoryReading> Read(pid_t pid, uint64_t start_time);

 private:
  absl::Status Open(pid_t pid);
  void Close();

  const MemoryWatcherOptions opts_;
  pid_t pid_ = 0;
  uint64_t start_time_ = 0;
  int statm_fd_ = -1, usage_fd_ = -1, limit_fd_ = -1;
  std::string cgroup_desc_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_OOM_MEMORY_WATCH_H_
