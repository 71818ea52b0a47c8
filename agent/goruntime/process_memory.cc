#include "agent/goruntime/process_memory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace pprof_sidecar {

absl::StatusOr<uint64_t> MemoryReader::ReadU64(uint64_t addr) {
  uint64_t v = 0;
  absl::Status st = Read(addr, &v, sizeof(v));
  if (!st.ok()) return st;
  return v;
}

absl::StatusOr<uint32_t> MemoryReader::ReadU32(uint64_t addr) {
  uint32_t v = 0;
  absl::Status st = Read(addr, &v, sizeof(v));
  if (!st.ok()) return st;
  return v;
}

absl::StatusOr<size_t> MemoryReader::ReadPartial(uint64_t addr, void* buf, size_t len) {
  absl::Status st = Read(addr, buf, len);
  if (!st.ok()) return st;
  return len;
}

absl::StatusOr<size_t> ProcessMemory::ReadPartial(uint64_t addr, void* buf, size_t len) {
  if (use_vm_readv_ && len > 0) {
    ++reads_;
    struct iovec local = {buf, len};
    struct iovec remote = {reinterpret_cast<void*>(static_cast<uintptr_t>(addr)), len};
    ssize_t n = process_vm_readv(pid_, &local, 1, &remote, 1, 0);
    if (n > 0) return static_cast<size_t>(n);
  }
  // Fall back to an exact read (and to /proc/PID/mem if process_vm_readv is not permitted).
  absl::Status st = Read(addr, buf, len);
  if (!st.ok()) return st;
  return len;
}

absl::StatusOr<std::unique_ptr<ProcessMemory>> ProcessMemory::Open(pid_t pid) {
  struct stat st;
  std::string dir = absl::StrCat("/proc/", pid);
  if (pid <= 0 || stat(dir.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("process ", pid, " does not exist"));
  }
  return std::unique_ptr<ProcessMemory>(new ProcessMemory(pid));
}

ProcessMemory::~ProcessMemory() {
  if (mem_fd_ >= 0) close(mem_fd_);
}

absl::Status ProcessMemory::Read(uint64_t addr, void* buf, size_t len) {
  if (len == 0) return absl::OkStatus();
  ++reads_;
  if (use_vm_readv_) {
    struct iovec local = {buf, len};
    struct iovec remote = {reinterpret_cast<void*>(static_cast<uintptr_t>(addr)), len};
    ssize_t n = process_vm_readv(pid_, &local, 1, &remote, 1, 0);
    if (n == static_cast<ssize_t>(len)) return absl::OkStatus();
    if (n >= 0 || errno == EFAULT || errno == EIO) {
      return absl::DataLossError(absl::StrCat("pid ", pid_, ": cannot read ", len, " bytes at 0x",
                                              absl::Hex(addr),
                                              n >= 0 ? ": short read" : ": address not mapped"));
    }
    if (errno == ESRCH) {
      return absl::NotFoundError(absl::StrCat("process ", pid_, " exited"));
    }
    if (errno != EPERM && errno != ENOSYS) {
      return absl::InternalError(absl::StrCat("process_vm_readv(pid ", pid_, ", 0x",
                                              absl::Hex(addr), "): ", strerror(errno)));
    }
    use_vm_readv_ = false;  // e.g. seccomp; /proc/PID/mem may still be allowed
  }
  if (mem_fd_ < 0) {
    std::string path = absl::StrCat("/proc/", pid_, "/mem");
    mem_fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (mem_fd_ < 0) {
      return absl::PermissionDeniedError(absl::StrCat(
          "cannot read memory of pid ", pid_, " (process_vm_readv denied; open ", path, ": ",
          strerror(errno), "): the agent needs CAP_SYS_PTRACE and the target's pid namespace"));
    }
  }
  size_t done = 0;
  while (done < len) {
    ssize_t n =
        pread(mem_fd_, static_cast<char*>(buf) + done, len - done, static_cast<off_t>(addr + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::DataLossError(absl::StrCat("pid ", pid_, ": cannot read ", len, " bytes at 0x",
                                              absl::Hex(addr), " from /proc/PID/mem",
                                              n < 0 ? absl::StrCat(": ", strerror(errno)) : ""));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status ProcessMemory::Write(uint64_t addr, const void* buf, size_t len) {
  struct iovec local = {const_cast<void*>(buf), len};
  struct iovec remote = {reinterpret_cast<void*>(static_cast<uintptr_t>(addr)), len};
  ssize_t n = process_vm_writev(pid_, &local, 1, &remote, 1, 0);
  if (n == static_cast<ssize_t>(len)) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("process_vm_writev(pid ", pid_, ", 0x", absl::Hex(addr),
                                          ", ", len,
                                          " bytes): ", n >= 0 ? "short write" : strerror(errno)));
}

}  // namespace pprof_sidecar
