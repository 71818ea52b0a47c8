#include "agent/goprofile/goroutines.h"

#include <time.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/goruntime/thread_regs.h"

namespace pprof_sidecar {
namespace {

constexpr uint8_t kFuncFlagTopFrame = 1;
constexpr uint8_t kFuncFlagSpWrite = 2;

// A goroutine's stack bytes read once; reads outside them go to the process.
class StackWindow : public MemoryReader {
 public:
  StackWindow(MemoryReader& mem, uint64_t base, std::string bytes)
      : mem_(mem), base_(base), bytes_(std::move(bytes)) {}
  absl::Status Read(uint64_t addr, void* buf, size_t len) override {
    if (addr >= base_ && addr - base_ <= bytes_.size() && bytes_.size() - (addr - base_) >= len) {
      memcpy(buf, bytes_.data() + (addr - base_), len);
      return absl::OkStatus();
    }
    return mem_.Read(addr, buf, len);
  }

 private:
  MemoryReader& mem_;
  uint64_t base_;
  std::string bytes_;
};

template <typename T>
T Field(const std::string& b, int off) {
  T v{};
  if (off >= 0 && static_cast<size_t>(off) + sizeof(T) <= b.size())
    memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

int64_t MonotonicNanos() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// The fields that change when a goroutine runs: compared before and after reading its stack.
struct GState {
  uint32_t status = 0;
  uint64_t goid = 0, sp = 0, pc = 0, syscallsp = 0, syscallpc = 0, m = 0;
  bool operator==(const GState& o) const {
    return status == o.status && goid == o.goid && sp == o.sp && pc == o.pc &&
           syscallsp == o.syscallsp && syscallpc == o.syscallpc && m == o.m;
  }
};

GState StateOf(const std::string& b, const GoLayout& l) {
  GState s;
  s.status = Field<uint32_t>(b, l.g_atomicstatus);
  s.goid = Field<uint64_t>(b, l.g_goid);
  s.sp = Field<uint64_t>(b, l.g_sched_sp);
  s.pc = Field<uint64_t>(b, l.g_sched_pc);
  s.syscallsp = Field<uint64_t>(b, l.g_syscallsp);
  s.syscallpc = Field<uint64_t>(b, l.g_syscallpc);
  s.m = Field<uint64_t>(b, l.g_m);
  return s;
}

enum class ReadResult { kOk, kDead, kRetry };

bool IsSystemstackSwitch(const GoBinary& bin, uint64_t link_pc) {
  absl::StatusOr<GoPclntab::FuncInfo> f = bin.pcln().LookupFunc(link_pc);
  return f.ok() && f->name == "runtime.systemstack_switch";
}

// Reads the stack from sp up in one read, then unwinds over that copy.
UnwoundStack UnwindFrom(MemoryReader& mem, const GoBinary& bin, uint64_t bias, uint64_t pc,
                        uint64_t sp, uint64_t hi, bool trap, const GoroutineReadLimits& limits,
                        GoFuncCache* funcs) {
  std::string stack(std::min<uint64_t>(hi - sp, limits.max_stack_read), '\0');
  absl::StatusOr<size_t> got = mem.ReadPartial(sp, stack.data(), stack.size());
  if (!got.ok()) {
    UnwoundStack u;
    u.error = std::string(got.status().message());
    return u;
  }
  stack.resize(*got);
  StackWindow window(mem, sp, std::move(stack));
  return UnwindGoStack(window, bin.pcln(), bias, pc, sp, hi, trap, limits.max_frames, funcs);
}

// One attempt at one goroutine.
ReadResult ReadOne(MemoryReader& mem, const GoBinary& bin, const GoLayout& l, uint64_t bias,
                   uint64_t gp, const ThreadRegsFn& regs, const GoroutineReadLimits& limits,
                   GoFuncCache* funcs, Goroutine* out, std::string* why) {
  std::string b(l.g_size, '\0');
  if (absl::Status st = mem.Read(gp, b.data(), b.size()); !st.ok()) {
    *why = std::string(st.message());
    return ReadResult::kRetry;
  }
  const GState before = StateOf(b, l);
  Goroutine g;
  g.g = gp;
  g.status = before.status & ~static_cast<uint32_t>(kGscan);
  g.scan = (before.status & kGscan) != 0;
  if (g.status == kGdead || g.status == kGdeadextra) return ReadResult::kDead;
  if (g.status == kGcopystack) {
    *why = "its stack was being copied";
    return ReadResult::kRetry;
  }
  g.goid = before.goid;
  g.parent_goid = l.g_parent_goid >= 0 ? Field<uint64_t>(b, l.g_parent_goid) : 0;
  g.wait_reason = Field<uint8_t>(b, l.g_waitreason);
  g.wait_since = Field<int64_t>(b, l.g_waitsince);
  g.locked_to_thread = Field<uint64_t>(b, l.g_lockedm) != 0;
  g.gopc = Field<uint64_t>(b, l.g_gopc) - bias;
  g.labels = Field<uint64_t>(b, l.g_labels);
  g.system = bin.IsSystemGoroutineStart(Field<uint64_t>(b, l.g_startpc) - bias);
  g.finalizer = bin.IsFinalizerGoroutineStart(Field<uint64_t>(b, l.g_startpc) - bias);
  const uint64_t lo = Field<uint64_t>(b, l.g_stack_lo), hi = Field<uint64_t>(b, l.g_stack_hi);
  UnwoundStack u;
  if (g.status == kGrunning) {
    absl::StatusOr<uint64_t> tid = mem.ReadU64(before.m + l.m_procid);
    if (before.m == 0 || !tid.ok()) {
      *why = "running without an m";
      return ReadResult::kRetry;
    }
    g.tid = static_cast<int>(*tid);
    bool still = false;
    const bool stopped =
        regs && regs(g.tid, [&](const ThreadRegs& r) {
          // The thread is stopped: the goroutine cannot change unless it no longer runs there.
          std::string again(l.g_size, '\0');
          still = mem.Read(gp, again.data(), again.size()).ok() && StateOf(again, l) == before;
          if (!still) return;
          if (r.sp >= lo && r.sp < hi) {
            u = UnwindFrom(mem, bin, bias, r.pc, r.sp, hi, /*trap=*/true, limits, funcs);
          } else if (IsSystemstackSwitch(bin, before.pc - bias)) {
            // On the thread's g0 stack (systemstack): g.sched was saved at the switch.
            u = UnwindFrom(mem, bin, bias, before.pc, before.sp, hi, false, limits, funcs);
          } else {
            u.error = "on another stack (signal handler or scheduler)";
          }
        });
    if (stopped && !still) {
      *why = "it stopped running while being read";
      return ReadResult::kRetry;
    }
    if (!stopped || !u.whole) {  // listed without a stack, as Go's crash dump does
      *out = std::move(g);
      return ReadResult::kOk;
    }
  } else {
    uint64_t pc = before.pc, sp = before.sp;
    if (before.syscallsp != 0) pc = before.syscallpc, sp = before.syscallsp;
    if (sp == 0 || sp < lo || sp >= hi) {
      *why = absl::StrCat("saved sp 0x", absl::Hex(sp), " outside its stack");
      return ReadResult::kRetry;
    }
    u = UnwindFrom(mem, bin, bias, pc, sp, hi, false, limits, funcs);
    std::string again(l.g_size, '\0');
    if (!mem.Read(gp, again.data(), again.size()).ok() || !(StateOf(again, l) == before)) {
      *why = "it ran while being read";
      return ReadResult::kRetry;
    }
    if (!u.whole) {
      *why = u.error;
      return ReadResult::kRetry;
    }
  }
  g.frames = std::move(u.frames);
  *out = std::move(g);
  return ReadResult::kOk;
}

}  // namespace

UnwoundStack UnwindGoStack(MemoryReader& mem, const GoPclntab& pcln, uint64_t bias, uint64_t pc,
                           uint64_t sp, uint64_t stack_hi, bool first_is_trap, size_t max_frames,
                           GoFuncCache* funcs) {
  UnwoundStack u;
  bool trap = first_is_trap;
  while (u.frames.size() < max_frames) {
    absl::StatusOr<GoPclntab::FuncInfo> f;
    if (auto it = funcs ? funcs->find(pc - bias) : GoFuncCache::iterator();
        funcs && it != funcs->end()) {
      f = it->second;
    } else {
      f = pcln.LookupFunc(pc - bias);
      if (f.ok() && funcs && funcs->size() < (1 << 16)) funcs->emplace(pc - bias, *f);
    }
    if (!f.ok()) {
      u.error = absl::StrCat("pc 0x", absl::Hex(pc), " is in no Go function");
      return u;
    }
    const uint64_t link = pc - bias;
    u.frames.push_back({pc, trap || link == f->entry ? link : link - 1, 0});
    if ((f->flag & kFuncFlagTopFrame) != 0 || f->name == "runtime.goexit") {
      u.whole = true;
      return u;
    }
    if ((f->flag & kFuncFlagSpWrite) != 0 && u.frames.size() > 1) {
      u.error = absl::StrCat(f->name, " switches stacks");
      return u;
    }
    const uint64_t fp = sp + static_cast<uint64_t>(f->sp_delta) + 8;
    u.frames.back().argp = fp;
    if (fp > stack_hi) {
      u.error = absl::StrCat("frame of ", f->name, " beyond the stack");
      return u;
    }
    absl::StatusOr<uint64_t> lr = mem.ReadU64(fp - 8);
    if (!lr.ok()) {
      u.error = std::string(lr.status().message());
      return u;
    }
    // The frame after an asynchronous preemption or a signal was interrupted, not calling.
    trap = f->name == "runtime.asyncPreempt" || f->name == "runtime.sigpanic";
    pc = *lr;
    sp = fp;
  }
  u.error = absl::StrCat("deeper than ", max_frames, " frames");
  return u;
}

ThreadRegsFn StoppedThreadRegs(absl::Duration timeout, absl::Duration* stopped, int* stops) {
  return [timeout, stopped, stops](int tid, const std::function<void(const ThreadRegs&)>& fn) {
    absl::StatusOr<absl::Duration> d =
        WithThreadStopped(tid, timeout, [&fn](const ThreadStopRegs& r) {
          fn(ThreadRegs{r.pc, r.sp});
        });
    if (!d.ok()) return false;
    *stopped += *d;
    ++*stops;
    return true;
  };
}

absl::StatusOr<GoroutineSnapshot> ReadGoroutines(MemoryReader& mem, const GoBinary& bin,
                                                 uint64_t bias, const ThreadRegsFn& regs,
                                                 const GoroutineReadLimits& limits) {
  absl::StatusOr<GoLayout> layout = bin.layout();
  if (!layout.ok()) return layout.status();
  if (!bin.sched_vars().ok()) return bin.sched_vars().status();
  const GoRuntimeVars& v = *bin.sched_vars();
  GoroutineSnapshot snap;
  snap.nanotime = MonotonicNanos();
  absl::StatusOr<uint64_t> n = mem.ReadU64(v.allglen + bias);
  if (!n.ok()) return n.status();
  absl::StatusOr<uint64_t> array = mem.ReadU64(v.allgptr + bias);
  if (!array.ok()) return array.status();
  if (*n > limits.max_goroutines) {
    return absl::ResourceExhaustedError(absl::StrCat("runtime.allglen is ", *n, ", more than the ",
                                                     limits.max_goroutines,
                                                     " goroutines this agent reads"));
  }
  std::vector<uint64_t> gps(*n);
  if (*n > 0) {
    if (absl::Status st = mem.Read(*array, gps.data(), gps.size() * 8); !st.ok()) return st;
  }
  snap.goroutines.reserve(gps.size());
  // The finalizer goroutine is a user goroutine while it runs a finalizer, as Go counts it
  // (isSystemGoroutine); a system one when that cannot be read.
  absl::StatusOr<bool> fin_running = bin.FinalizerRunning(mem, bias);
  GoFuncCache funcs;
  for (uint64_t gp : gps) {
    if (gp == 0 || gp % 8 != 0) {
      return absl::DataLossError(absl::StrCat("runtime.allgs holds 0x", absl::Hex(gp)));
    }
    Goroutine g;
    std::string why;
    ReadResult r = ReadResult::kRetry;
    for (int attempt = 0; attempt < limits.max_attempts; ++attempt) {
      if (attempt > 0) ++snap.retries;
      r = ReadOne(mem, bin, *layout, bias, gp, regs, limits, &funcs, &g, &why);
      if (r != ReadResult::kRetry) break;
    }
    if (r == ReadResult::kDead) continue;
    if (r == ReadResult::kRetry) {
      ++snap.unreadable;
      continue;
    }
    if (g.status == kGrunning && g.frames.empty()) ++snap.running_without_regs;
    if (g.finalizer) g.system = !(fin_running.ok() && *fin_running);
    snap.goroutines.push_back(std::move(g));
  }
  return snap;
}

}  // namespace pprof_sidecar
