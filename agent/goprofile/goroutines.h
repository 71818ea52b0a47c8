// Reading a Go program's goroutines out of its memory: runtime.allgs (through allglen/allgptr),
// each g's status, wait reason, ids, creation PC and labels, and its stack unwound from its saved
// context with pclntab frame sizes.
//
// Where a stack starts: a goroutine in a system call from its syscallpc/syscallsp, any other
// goroutine that is not running from g.sched (pc, sp), as Go's own traceback does. A running
// goroutine's saved context is stale: its stack is taken from the registers of the thread running
// it (m.procid), which the caller supplies through ThreadRegs (see ThreadRegsFn); without them
// the goroutine is listed with no stack ("stack unavailable"), as Go's crash dump does.
//
// Consistency (read, validate, retry): the goroutine list is read once (allglen before allgptr,
// so every slot read exists). For each goroutine the g is read, then its stack, then the g
// again: if its status, goid or saved context changed in between (it ran), the goroutine is read
// again, up to max_attempts times; a stack must also unwind to the goroutine's top frame
// (runtime.goexit) through known functions. Goroutines that never give a whole stack are counted
// in `unreadable` and left out, so every stack returned is whole. Nothing is written to the
// target and it is never stopped by this reader.
#ifndef PPROF_SIDECAR_AGENT_GOPROFILE_GOROUTINES_H_
#define PPROF_SIDECAR_AGENT_GOPROFILE_GOROUTINES_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/goruntime/go_runtime.h"
#include "agent/goruntime/process_memory.h"

namespace pprof_sidecar {

// One physical frame. `pc` is a runtime address; `sym_pc` is where it is symbolized (pc - 1 for
// a return address, pc itself at a function entry or an interrupted instruction), link-time.
struct GoFrame {
  uint64_t pc = 0;
  uint64_t sym_pc = 0;
  uint64_t argp = 0;  // runtime address of its argument area (the caller's SP), 0 if unknown
};

struct Goroutine {
  uint64_t g = 0;  // runtime address of the g
  uint64_t goid = 0, parent_goid = 0;
  uint32_t status = 0;  // without the scan bit
  bool scan = false;
  uint8_t wait_reason = 0;
  int64_t wait_since = 0;  // nanotime() when it blocked, 0 if unknown
  bool locked_to_thread = false;
  bool system = false;          // a runtime goroutine (isSystemGoroutine)
  bool finalizer = false;       // the finalizer goroutine (runtime.runfinq)
  uint64_t gopc = 0;            // link-time PC of the go statement that created it
  uint64_t labels = 0;          // runtime address of its pprof label set, 0 if none
  std::vector<GoFrame> frames;  // leaf first; empty: stack unavailable (running, no registers)
  int tid = 0;                  // thread running it (status running), else 0
};

struct GoroutineSnapshot {
  std::vector<Goroutine> goroutines;  // live (not dead) goroutines, system ones included
  int retries = 0;                    // goroutines read again because they ran meanwhile
  int unreadable = 0;                 // left out: no whole stack after every attempt
  int running_without_regs = 0;       // running, no thread registers: listed without a stack
  int64_t nanotime = 0;               // CLOCK_MONOTONIC at the read (Go's nanotime)
  int thread_stops = 0;               // threads stopped for their registers
  absl::Duration stopped;             // their stops, summed
};

struct GoroutineReadLimits {
  size_t max_goroutines = 1 << 21;
  size_t max_frames = 1024;
  size_t max_stack_read = 1 << 20;  // bytes of stack read per goroutine
  int max_attempts = 4;
};

// Registers of a thread of the target: pc, sp.
struct ThreadRegs {
  uint64_t pc = 0, sp = 0;
};
// Calls `fn` with thread `tid`'s registers while the thread stays stopped; false if the thread
// could not be stopped (fn not called). Production: StoppedThreadRegs() (thread_regs.h).
using ThreadRegsFn = std::function<bool(int tid, const std::function<void(const ThreadRegs&)>& fn)>;
// Stops one thread at a time with ptrace for at most `timeout`; adds each stop to *stopped.
ThreadRegsFn StoppedThreadRegs(absl::Duration timeout, absl::Duration* stopped, int* stops);

// Reads every goroutine. `bias` is the executable's load bias (PIE).
absl::StatusOr<GoroutineSnapshot> ReadGoroutines(MemoryReader& mem, const GoBinary& bin,
                                                 uint64_t bias, const ThreadRegsFn& regs = nullptr,
                                                 const GoroutineReadLimits& limits = {});

// Unwinds a goroutine stack from (pc, sp) with the pclntab's frame sizes, reading stack words
// through `mem`; whole only if it ends at a top frame (runtime.goexit and the like).
struct UnwoundStack {
  std::vector<GoFrame> frames;
  bool whole = false;
  std::string error;  // why it is not whole
};
// `funcs` (optional) memoizes pclntab lookups by link-time PC across calls.
using GoFuncCache = std::unordered_map<uint64_t, GoPclntab::FuncInfo>;
UnwoundStack UnwindGoStack(MemoryReader& mem, const GoPclntab& pcln, uint64_t bias, uint64_t pc,
                           uint64_t sp, uint64_t stack_hi, bool first_is_trap, size_t max_frames,
                           GoFuncCache* funcs = nullptr);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_GOPROFILE_GOROUTINES_H_
