// /proc/PID/maps parsing and path resolution into another mount namespace.
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_PROC_MAPS_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_PROC_MAPS_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/symbolize/target_file.h"

namespace pprof_sidecar {

struct MapEntry {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t offset = 0;  // file offset of start
  bool read = false, write = false, exec = false, shared = false;
  uint32_t dev_major = 0, dev_minor = 0;
  uint64_t inode = 0;
  std::string path;     // as the target sees it, " (deleted)" suffix stripped
  bool deleted = false;  // the kernel marked the path " (deleted)"
  bool IsFileBacked() const { return inode != 0 && !path.empty() && path[0] == '/'; }
};

// Parses the text of /proc/PID/maps. Malformed lines produce an error naming the line number.
absl::StatusOr<std::vector<MapEntry>> ParseProcMaps(absl::string_view text);
// Reads and parses /proc/<pid>/maps.
absl::StatusOr<std::vector<MapEntry>> ReadProcMaps(pid_t pid);

// A file the target mapped, opened by the agent.
struct OpenedTargetFile {
  TargetFd fd;
  std::string path;  // what was opened, for messages: map_files link or root + mapped path
};
// Opens a file the target mapped, even if the target lives in another mount namespace or the
// file was deleted or replaced since: /proc/<pid>/map_files/<start>-<end> (always the mapped
// inode; needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN), else the mapped path resolved inside
// the target's root (/proc/<pid>/root), so a symlink cannot lead into the agent's filesystem,
// else (a target chrooted inside the agent's mount namespace) /proc/<pid>/exe when it names the
// mapped path, or the mapped path itself when its device and inode are the mapped ones.
// Target-file rules apply (target_file.h: never blocks, regular files of bounded size only).
absl::StatusOr<OpenedTargetFile> OpenTargetFile(pid_t pid, const MapEntry& e);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_PROC_MAPS_H_
