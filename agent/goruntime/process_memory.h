// Reading another process's memory: process_vm_readv, falling back to /proc/PID/mem (which also
// works where process_vm_readv is blocked by seccomp). Both need ptrace-read access
// (CAP_SYS_PTRACE or the same uid under Yama scope 0/1 rules).
#ifndef PPROF_SIDECAR_AGENT_GORUNTIME_PROCESS_MEMORY_H_
#define PPROF_SIDECAR_AGENT_GORUNTIME_PROCESS_MEMORY_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pprof_sidecar {

// Source of bytes at addresses of some address space. Implementations: a live process, or a
// byte blob in tests and fuzzers.
class MemoryReader {
 public:
  virtual ~MemoryReader() = default;
  // Reads exactly `len` bytes at `addr` into `buf`; an error (naming the address) otherwise.
  virtual absl::Status Read(uint64_t addr, void* buf, size_t len) = 0;
  // Reads up to `len` bytes at `addr`, stopping early at the end of readable memory; returns the
  // count (an error only if nothing could be read). Default: all or nothing via Read.
  virtual absl::StatusOr<size_t> ReadPartial(uint64_t addr, void* buf, size_t len);

  absl::StatusOr<uint64_t> ReadU64(uint64_t addr);
  absl::StatusOr<uint32_t> ReadU32(uint64_t addr);
};

class ProcessMemory : public MemoryReader {
 public:
  // Opens /proc/PID/mem lazily; fails only if the process does not exist.
  static absl::StatusOr<std::unique_ptr<ProcessMemory>> Open(pid_t pid);
  ~ProcessMemory() override;
  ProcessMemory(const ProcessMemory&) = delete;
  ProcessMemory& operator=(const ProcessMemory&) = delete;

  absl::Status Read(uint64_t addr, void* buf, size_t len) override;
  absl::StatusOr<size_t> ReadPartial(uint64_t addr, void* buf, size_t len) override;
  // Writes exactly `len` bytes at `addr` (process_vm_writev). The agent writes to a target only
  // for ContentionSource's opt-in rate window (contention_source.h).
  absl::Status Write(uint64_t addr, const void* buf, size_t len);
  pid_t pid() const { return pid_; }
  uint64_t reads() const { return reads_; }

 private:
  explicit ProcessMemory(pid_t pid) : pid_(pid) {}
  const pid_t pid_;
  int mem_fd_ = -1;  // /proc/PID/mem once process_vm_readv failed with EPERM/ENOSYS
  bool use_vm_readv_ = true;
  uint64_t reads_ = 0;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_GORUNTIME_PROCESS_MEMORY_H_
