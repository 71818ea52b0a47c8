#include "agent/sampler/libbpf_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"

namespace pprof_sidecar {
namespace {

int LibbpfLog(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  fputs("pprof-sidecar: libbpf: ", stderr);
  return vfprintf(stderr, format, args);
}

}  // namespace

absl::Status ErrnoStatus(absl::string_view what, int err, absl::string_view privilege_hint) {
  std::string msg = absl::StrCat(what, ": ", strerror(err));
  switch (err) {
    case EPERM:
    case EACCES:
      if (!privilege_hint.empty()) absl::StrAppend(&msg, " \xe2\x80\x94 needs ", privilege_hint);
      return absl::PermissionDeniedError(msg);
    case ENOENT:
    case ENODEV:
    case ESRCH:
      return absl::NotFoundError(msg);
    case EINVAL:
      return absl::InvalidArgumentError(msg);
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EBUSY:
    case E2BIG:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<PidNamespaceId> AgentPidNamespace() {
  struct stat st;
  if (stat("/proc/self/ns/pid", &st) != 0) return ErrnoStatus("stat(/proc/self/ns/pid)", errno);
  return PidNamespaceId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

std::vector<uint64_t> PerCpuSums(const bpf_map* map, uint32_t n) {
  std::vector<uint64_t> sums(n);
  for (uint32_t key = 0; key < n; ++key) {
    for (uint64_t v : PerCpuValues<uint64_t>(map, key)) sums[key] += v;
  }
  return sums;
}

void InstallLibbpfLogHook() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(LibbpfLog); });
}

ScopedFd& ScopedFd::operator=(ScopedFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

ScopedFd::~ScopedFd() { reset(); }

void ScopedFd::reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

}  // namespace pprof_sidecar
