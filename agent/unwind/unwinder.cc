#include "agent/unwind/unwinder.h"

#include <algorithm>
#include <cstring>

#include "agent/symbolize/go_code.h"

namespace pprof_sidecar {

const char* UnwindStopName(UnwindStop s) {
  switch (s) {
    case UnwindStop::kEndOfStack:
      return "end_of_stack";
    case UnwindStop::kNoCfi:
      return "no_cfi";
    case UnwindStop::kOutsideStack:
      return "read_outside_stack";
    case UnwindStop::kDepthLimit:
      return "depth_limit";
    case UnwindStop::kBadAddress:
      return "bad_address";
    case UnwindStop::kStackSwitch:
      return "stack_switch";
    case UnwindStop::kNumStops:
      break;
  }
  return "unknown";
}

namespace {

// Go functions at which a goroutine's or an M's stack ends.
bool IsGoRoot(absl::string_view name) {
  return name == "runtime.goexit" || name == "runtime.mstart" || name == "runtime.mstart0" ||
         name == "runtime.rt0_go" || name == "runtime.goexit0" || name == "runtime.goexit1";
}

// Go functions that switch stacks: the caller's frame is on another stack than the copy.
// runtime.cgocallback is not one of them: when C calls back into Go, cgocallback opens its frame
// on the goroutine's stack just below where the goroutine entered C, with the goroutine's saved
// sched.pc (runtime.systemstack_switch) as its return address, so the goroutine's own callers
// (runtime.cgocall, the Go code that called C) follow on the same stack, as Go's traceback
// walks them.
bool IsGoStackSwitch(absl::string_view name) {
  return name == "runtime.systemstack" || name == "runtime.asmcgocall" || name == "runtime.mcall" ||
         name == "runtime.morestack" || name == "runtime.asmcgocall_no_g";
}

// Go functions that call the vDSO on the g0 stack (sys_linux_amd64.s, time_linux_amd64.s): they
// move SP to g0 and back while their BP frame stays on the goroutine stack.
bool IsGoVdsoCaller(absl::string_view name) {
  return name == "runtime.nanotime1" || name == "time.now";
}

class StackMem {
 public:
  StackMem(uint64_t base, absl::string_view bytes) : base_(base), bytes_(bytes) {}
  bool Read(uint64_t addr, uint64_t* v) const {
    if (addr < base_ || addr - base_ > bytes_.size() || bytes_.size() - (addr - base_) < 8) {
      return false;
    }
    memcpy(v, bytes_.data() + (addr - base_), 8);
    return true;
  }

 private:
  uint64_t base_;
  absl::string_view bytes_;
};

struct Frame {
  uint64_t pc = 0, sp = 0, bp = 0;
  bool bp_known = true;
  bool exact_pc = true;  // pc is not a return address (leaf, or interrupted by a signal)
};

// Applies a register rule for rbp. Returns false if the value is unknown.
bool RecoverRbp(const CfiRegRule& r, const Frame& f, uint64_t cfa, const StackMem& mem,
                uint64_t* out) {
  switch (r.kind) {
    case CfiRegRule::kSameValue:
      *out = f.bp;
      return f.bp_known;
    case CfiRegRule::kOffset:
      return mem.Read(cfa + r.offset, out);
    case CfiRegRule::kValOffset:
      *out = cfa + r.offset;
      return true;
    case CfiRegRule::kRegister:
      if (r.reg == kDwarfRsp) {
        *out = f.sp;
        return true;
      }
      if (r.reg == kDwarfRbp) {
        *out = f.bp;
        return f.bp_known;
      }
      return false;
    case CfiRegRule::kExpression:
    case CfiRegRule::kValExpression: {
      uint64_t addr;
      auto rd = [&mem](uint64_t a, uint64_t* v) { return mem.Read(a, v); };
      if (!EvalDwarfExpr(r.expr, f.pc, f.sp, f.bp, true, cfa, rd, &addr)) return false;
      if (r.kind == CfiRegRule::kValExpression) {
        *out = addr;
        return true;
      }
      return mem.Read(addr, out);
    }
    case CfiRegRule::kUndefined:
      return false;
  }
  return false;
}

// One step with CFI. Returns kEndOfStack with *done=false to continue.
UnwindStop StepCfi(const CfiRow& row, const StackMem& mem, Frame* f, bool* done) {
  *done = true;
  uint64_t cfa = 0;
  if (row.cfa_kind == CfiRow::kCfaRegOffset) {
    if (row.cfa_reg == kDwarfRsp) {
      cfa = f->sp + row.cfa_offset;
    } else if (row.cfa_reg == kDwarfRbp) {
      if (!f->bp_known) return UnwindStop::kBadAddress;
      cfa = f->bp + row.cfa_offset;
    } else {
      return UnwindStop::kNoCfi;  // CFA in a register the sample does not have
    }
  } else {
    auto rd = [&mem](uint64_t a, uint64_t* v) { return mem.Read(a, v); };
    if (!EvalDwarfExpr(row.cfa_expr, f->pc, f->sp, f->bp, false, 0, rd, &cfa)) {
      return UnwindStop::kOutsideStack;
    }
  }
  uint64_t ra = 0;
  switch (row.ra.kind) {
    case CfiRegRule::kUndefined:
      return UnwindStop::kEndOfStack;
    case CfiRegRule::kOffset:
      if (!mem.Read(cfa + row.ra.offset, &ra)) return UnwindStop::kOutsideStack;
      break;
    case CfiRegRule::kExpression:
    case CfiRegRule::kValExpression:
    case CfiRegRule::kValOffset:
    case CfiRegRule::kRegister:
      if (!RecoverRbp(row.ra, *f, cfa, mem, &ra)) return UnwindStop::kOutsideStack;
      break;
    case CfiRegRule::kSameValue:
      return UnwindStop::kNoCfi;
  }
  uint64_t bp = 0;
  const bool bp_known = RecoverRbp(row.rbp, *f, cfa, mem, &bp);
  if (ra == 0) return UnwindStop::kEndOfStack;
  if (!row.signal_frame && cfa <= f->sp) return UnwindStop::kBadAddress;
  f->pc = ra;
  f->sp = cfa;
  f->bp = bp;
  f->bp_known = bp_known;
  f->exact_pc = row.signal_frame;
  *done = false;
  return UnwindStop::kEndOfStack;
}

// Where the walk stopped at runtime.asmcgocall (C code called through cgo), the binary's
// runtime.cgocall and the runtime address of its return from asmcgocall.
struct CgoStop {
  const ElfFile* elf = nullptr;
  uint64_t bias = 0;
  uint64_t cgocall_entry = 0;  // link-time
  uint64_t cgocall_frame = 0;  // runtime return address into cgocall
};

// Appends the part of the frame-pointer walk that continues the unwound stack, if one matches.
// `sample_bp`: the frame pointer the walk started from.
void Stitch(const std::vector<uint64_t>& fp_ips, const Frame& last, uint64_t sample_bp,
            bool fp_ips_scanned, const CgoStop& cgo, UnwindResult* out) {
  if (fp_ips.size() < 2) return;
  // Not even the sampled frame could be unwound (code without CFI or pclntab: the [vdso], JIT
  // code): the walk from the sampled rbp is all there is.
  if (out->ips.size() == 1 && !fp_ips_scanned && fp_ips[0] == out->ips[0]) {
    for (size_t m = 1; m < fp_ips.size(); ++m) out->ips.push_back(fp_ips[m]);
    out->stitched_frames = fp_ips.size() - 1;
    return;
  }
  // A return address of ours that the frame-pointer walk also found: continue after it.
  for (size_t j = out->ips.size(); j-- > 1;) {
    for (size_t k = 1; k < fp_ips.size(); ++k) {
      if (fp_ips[k] != out->ips[j]) continue;
      out->ips.resize(j + 1);
      for (size_t m = k + 1; m < fp_ips.size(); ++m) out->ips.push_back(fp_ips[m]);
      out->stitched_frames = fp_ips.size() - k - 1;
      return;
    }
  }
  // The last frame still has the sampled rbp (e.g. C code called by Go's asmcgocall keeps the
  // Go caller's frame pointer): the kernel's walk from that rbp is the continuation.
  if (!fp_ips_scanned && out->ips.size() > 1 && last.bp_known && last.bp == sample_bp &&
      sample_bp != 0) {
    // At asmcgocall, rbp is runtime.cgocall's frame pointer, so the chain starts with cgocall's
    // return address (into the cgo wrapper, _Cfunc_*): cgocall's own frame is missing from it.
    if (cgo.elf != nullptr && fp_ips[1] > cgo.bias &&
        IsDirectCallReturn(*cgo.elf, fp_ips[1] - cgo.bias, cgo.cgocall_entry)) {
      out->ips.push_back(cgo.cgocall_frame);
      out->stitched_frames = 1;
    }
    for (size_t m = 1; m < fp_ips.size(); ++m) out->ips.push_back(fp_ips[m]);
    out->stitched_frames += fp_ips.size() - 1;
  }
}

}  // namespace

void Unwind(const UserRegs& regs, absl::string_view stack, const std::vector<uint64_t>& fp_ips,
            UnwindCodeLookup* lookup, const UnwindOptions& options, UnwindResult* out) {
  out->ips.clear();
  out->stitched_frames = 0;
  out->unwound_frames = 0;
  const StackMem mem(regs.sp, stack);
  Frame f;
  f.pc = regs.ip;
  f.sp = regs.sp;
  f.bp = regs.bp;
  out->ips.push_back(regs.ip);
  UnwindStop stop = UnwindStop::kEndOfStack;
  CgoStop cgo;
  size_t next_uret = 0;  // regs.uret_returns used so far
  while (true) {
    if (out->ips.size() >= options.max_frames) {
      stop = UnwindStop::kDepthLimit;
      break;
    }
    // A return probe's trampoline stands for the next real return address (see UserRegs); a leaf
    // executing the trampoline is about to return to it.
    if (next_uret < regs.uret_returns.size() &&
        (f.pc == regs.uret_trampoline || (out->ips.size() == 1 && regs.InUretTrampoline(f.pc)))) {
      if (f.pc != regs.uret_trampoline || f.exact_pc) {
        // Executing the trampoline: x86-64's (Linux >= 6.11) pushes rax, rcx and r11 (1, 1 and
        // 2 bytes of code) before its uretprobe syscall; the older one is a lone int3.
        const uint64_t off = f.pc - regs.uret_trampoline;
        f.sp += off >= 4 ? 24 : std::min<uint64_t>(off, 2) * 8;
      }
      f.pc = regs.uret_returns[next_uret++];
      f.exact_pc = false;
      out->ips.back() = f.pc;
    }
    const uint64_t pc = f.exact_pc ? f.pc : f.pc - 1;
    UnwindCodeLookup::Code code;
    if (f.pc == 0 || !lookup->Find(pc, &code)) {
      stop = UnwindStop::kBadAddress;
      break;
    }
    const uint64_t link_pc = pc - code.bias;
    bool done = true;
    // Native CFI first: Go code has no .eh_frame entries, while C code linked into a cgo
    // binary can lie inside the pclntab's pc range.
    absl::StatusOr<CfiRow> row = absl::NotFoundError("");
    if (code.cfi != nullptr) row = code.cfi->Find(link_pc);
    if (row.ok()) {
      stop = StepCfi(*row, mem, &f, &done);
    } else if (code.go != nullptr && link_pc >= code.go->min_pc() && link_pc < code.go->max_pc()) {
      auto fn = code.go->LookupFunc(link_pc);
      if (!fn.ok() || link_pc >= fn->end) {
        stop = UnwindStop::kNoCfi;
      } else if (IsGoRoot(fn->name)) {
        stop = UnwindStop::kEndOfStack;
      } else if (IsGoStackSwitch(fn->name)) {
        stop = UnwindStop::kStackSwitch;
        if (fn->name == "runtime.asmcgocall" && code.elf != nullptr && code.asmcgocall_return) {
          cgo.elf = code.elf;
          cgo.bias = code.bias;
          cgo.cgocall_entry = code.cgocall_entry;
          cgo.cgocall_frame = code.asmcgocall_return + code.bias;
        }
      } else if (out->ips.size() == 1 && IsGoVdsoCaller(fn->name) && fn->sp_delta >= 16 &&
                 f.bp + 8 != f.sp + static_cast<uint64_t>(fn->sp_delta)) {
        // Sampled between such a function's switch of SP to g0 and its restore (its frame is
        // set up, yet BP is not where the pclntab's SP offset puts the frame): the pclntab
        // offsets apply to the goroutine stack, not to SP. The frame-pointer chain from the
        // sampled BP continues the stack (Stitch).
        stop = UnwindStop::kStackSwitch;
      } else {
        const uint64_t ra_addr = f.sp + static_cast<uint64_t>(fn->sp_delta);
        uint64_t ra = 0;
        if (!mem.Read(ra_addr, &ra)) {
          stop = UnwindStop::kOutsideStack;
        } else if (ra == 0) {
          stop = UnwindStop::kEndOfStack;
        } else {
          // Go saves the caller's BP just below the return address once the frame is set up.
          if (fn->sp_delta >= 8) f.bp_known = mem.Read(ra_addr - 8, &f.bp);
          f.pc = ra;
          f.sp = ra_addr + 8;
          // cgocallback's "return address" is a saved sched.pc (systemstack_switch, in Go 1.19
          // its very first byte), not the byte after a call: look it up as is, as Go does.
          f.exact_pc = fn->name == "runtime.cgocallback";
          done = false;
        }
      }
    } else {
      stop = UnwindStop::kNoCfi;
    }
    if (done) break;
    out->ips.push_back(f.exact_pc ? f.pc + 1 : f.pc);
  }
  out->unwound_frames = out->ips.size();
  out->stop = stop;
  if (stop != UnwindStop::kEndOfStack) {
    Stitch(fp_ips, f, options.fp_ips_bp != 0 ? options.fp_ips_bp : regs.bp, options.fp_ips_scanned,
           cgo, out);
  }
  if (out->ips.size() > options.max_frames) out->ips.resize(options.max_frames);
}

}  // namespace pprof_sidecar
