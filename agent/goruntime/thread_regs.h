// Registers of one thread of another process, taken by stopping that thread alone for the time
// of one PTRACE_GETREGS: PTRACE_SEIZE, PTRACE_INTERRUPT, wait for the stop, read, PTRACE_DETACH.
// Needs CAP_SYS_PTRACE (or ptrace access to the target). If the agent dies while the thread is
// stopped, the kernel detaches it and it runs on: a stop is never left behind. A thread already
// traced by someone else (a debugger) is not touched (EPERM).
#ifndef PPROF_SIDECAR_AGENT_GORUNTIME_THREAD_REGS_H_
#define PPROF_SIDECAR_AGENT_GORUNTIME_THREAD_REGS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pprof_sidecar {

struct ThreadStopRegs {
  uint64_t pc = 0, sp = 0, bp = 0;
};

// Stops thread `tid`, calls fn with its registers while it stays stopped (fn may read the
// process's memory), then lets it run. The wait for the stop polls for `timeout`, then blocks
// (a seized thread must reach its stop to be detached; a running thread stops at once, a thread
// in an uninterruptible sleep when it leaves it). Returns how long it was stopped.
absl::StatusOr<absl::Duration> WithThreadStopped(
    pid_t tid, absl::Duration timeout, const std::function<void(const ThreadStopRegs&)>& fn);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_GORUNTIME_THREAD_REGS_H_
