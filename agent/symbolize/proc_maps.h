// /proc/PID/maps parsing and path resolution into another mount namespace.
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_PROC_MAPS_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_PROC_MAPS_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

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

// Path through which the agent can open a file the target mapped, even if the target lives in
// another mount namespace or the file was deleted/replaced since: prefers
// /proc/<pid>/map_files/<start>-<end> (always the mapped inode), else /proc/<pid>/root/<path>.
std::string TargetFilePath(pid_t pid, const MapEntry& e);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_PROC_MAPS_H_
