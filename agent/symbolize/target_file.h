// Opening files that a target process controls: its binaries and its debug files, seen through
// /proc/PID/map_files and /proc/PID/root. The target may be hostile, so every open here
//   - never blocks and has no side effect: the path is first opened with O_PATH (FIFOs, sockets
//     and devices are never opened for I/O), must be a regular file, and is then reopened
//     through /proc/self/fd with O_NONBLOCK (a lease held by the target makes the open fail with
//     EWOULDBLOCK instead of waiting for the lease break);
//   - is bounded: files larger than `max_bytes` are refused before anything is read;
//   - with a root (OpenRegularFileInRoot), resolves the path inside that directory tree only:
//     absolute symlinks, ".." and magic links cannot lead out of the target's filesystem into the
//     agent's own (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS on Linux >= 5.6, else a
//     component-by-component walk with O_PATH | O_NOFOLLOW that resolves symlinks itself).
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_TARGET_FILE_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_TARGET_FILE_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace pprof_sidecar {

// Largest target file (binary or debug file) the agent reads. Real debug files of very large C++
// programs reach a few GiB; nothing a profile needs is larger.
inline constexpr uint64_t kMaxTargetFileBytes = uint64_t{4} << 30;

// An owned file descriptor (closed on destruction), with the size and identity fstat saw.
class TargetFd {
 public:
  TargetFd() = default;
  TargetFd(int fd, uint64_t size, dev_t dev, ino_t ino)
      : fd_(fd), size_(size), dev_(dev), ino_(ino) {}
  ~TargetFd() { Reset(); }
  TargetFd(TargetFd&& o) noexcept { *this = std::move(o); }
  TargetFd& operator=(TargetFd&& o) noexcept;
  TargetFd(const TargetFd&) = delete;
  TargetFd& operator=(const TargetFd&) = delete;

  int get() const { return fd_; }
  // Gives up ownership.
  int release();
  void Reset();
  uint64_t size() const { return size_; }
  dev_t dev() const { return dev_; }
  ino_t ino() const { return ino_; }
  // "/proc/self/fd/N": a path naming exactly this open file (for APIs that take paths, such as
  // uprobe attachment), valid while this object lives.
  std::string ProcPath() const;

 private:
  int fd_ = -1;
  uint64_t size_ = 0;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

// Opens `path` (resolved normally: meant for kernel-provided links such as
// /proc/PID/map_files/... and /proc/PID/exe, and for the agent's own files) for reading, under
// the rules above. Errors: NotFound, PermissionDenied, FailedPrecondition (not a regular file,
// too large, leased), with the path in the message.
absl::StatusOr<TargetFd> OpenRegularFile(const std::string& path,
                                         uint64_t max_bytes = kMaxTargetFileBytes);

// Opens `path` (absolute or relative, interpreted inside `root`) with `root` as the filesystem
// root, e.g. root "/proc/123/root" and path "/usr/lib/debug/.build-id/ab/cdef.debug". root ""
// means "/".
absl::StatusOr<TargetFd> OpenRegularFileInRoot(const std::string& root, const std::string& path,
                                               uint64_t max_bytes = kMaxTargetFileBytes);

// Tests: force the component walk (as on kernels without openat2) or restore the default.
void UseOpenat2ForTesting(bool use);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_TARGET_FILE_H_
