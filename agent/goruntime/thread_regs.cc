#include "agent/goruntime/thread_regs.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace pprof_sidecar {
namespace {

absl::Status Errno(const char* what, pid_t tid) {
  const int e = errno;
  return absl::Status(e == EPERM || e == EACCES ? absl::StatusCode::kPermissionDenied
                      : e == ESRCH              ? absl::StatusCode::kNotFound
                                                : absl::StatusCode::kInternal,
                      absl::StrCat(what, " thread ", tid, ": ", strerror(e)));
}

// Detaches on scope exit (the thread then runs on, whatever happened).
struct Seized {
  pid_t tid;
  ~Seized() { ptrace(PTRACE_DETACH, tid, nullptr, nullptr); }
};

}  // namespace

absl::StatusOr<absl::Duration> WithThreadStopped(
    pid_t tid, absl::Duration timeout, const std::function<void(const ThreadStopRegs&)>& fn) {
  if (ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) return Errno("PTRACE_SEIZE", tid);
  Seized seized{tid};
  const absl::Time t0 = absl::Now();
  if (ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0) return Errno("PTRACE_INTERRUPT", tid);
  // PTRACE_INTERRUPT always ends in a stop, and a seized thread can only be detached once it
  // has stopped: past `timeout` the wait blocks rather than leave a stop pending behind a
  // detach that would fail.
  const absl::Time deadline = t0 + timeout;
  for (;;) {
    int status = 0;
    const bool late = absl::Now() > deadline;
    const pid_t r = waitpid(tid, &status, __WALL | (late ? 0 : WNOHANG));
    if (r == tid && WIFSTOPPED(status)) break;
    if (r == tid) return absl::NotFoundError(absl::StrCat("thread ", tid, " exited"));
    if (r < 0 && errno != EINTR) return Errno("waitpid", tid);
    if (!late) usleep(20);
  }
  struct user_regs_struct regs;
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) return Errno("PTRACE_GETREGS", tid);
  ThreadStopRegs out;
  out.pc = regs.rip;
  out.sp = regs.rsp;
  out.bp = regs.rbp;
  fn(out);
  return absl::Now() - t0;
}

}  // namespace pprof_sidecar
