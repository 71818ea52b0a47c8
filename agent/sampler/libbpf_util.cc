#include "agent/sampler/libbpf_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
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

absl::Status LibbpfErrnoStatus(absl::string_view what, int err, absl::string_view privilege_hint) {
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
