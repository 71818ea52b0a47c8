// User-space stack unwinding of one CPU sample from its registers (rip, rsp, rbp) and a copy of
// the top of its user stack, without frame pointers (the design of perf --call-graph=dwarf):
//   - Go code: the pcsp table of .gopclntab gives the frame size at each pc; the return address
//     is at sp + sp_delta(pc) and the caller's sp just above it. Works in stripped binaries.
//   - native code: .eh_frame / .debug_frame CFI rows (CfiTable) give the CFA, the return address
//     and the caller's rbp, including DWARF-expression CFAs (PLT stubs) and signal frames.
// Frames alternate freely between the two (Go -> cgo -> libc). When the walk stops before the
// thread's root (stack copy exhausted, stack switch, ...), the rest is stitched from the kernel's
// frame-pointer walk when a frame matches it. C code called from Go through cgo runs on the
// thread's g0 stack: its walk ends at runtime.asmcgocall, and the goroutine's frames are the
// frame-pointer chain from the sampled rbp (C preserves it), below runtime.cgocall's frame, which
// is added from the binary's code when the chain's first return address is a call to cgocall.
#ifndef PPROF_SIDECAR_AGENT_UNWIND_UNWINDER_H_
#define PPROF_SIDECAR_AGENT_UNWIND_UNWINDER_H_

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/sample/stack_sample.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/go_pclntab.h"
#include "agent/unwind/cfi.h"

namespace pprof_sidecar {

// Why the unwinder stopped.
enum class UnwindStop : uint8_t {
  kEndOfStack = 0,  // reached the thread's root (CFI marks the return address undefined, or a
                    // Go root function such as runtime.goexit / runtime.mstart)
  kNoCfi,           // no CFI / pclntab entry covers a pc (or the entry is corrupt)
  kOutsideStack,    // a read fell outside the copied stack
  kDepthLimit,      // more frames than UnwindOptions::max_frames
  kBadAddress,      // a pc outside any mapped binary, or a non-increasing stack pointer
  kStackSwitch,     // a Go stack switch (systemstack, asmcgocall, mcall, morestack)
  kNumStops,
};
const char* UnwindStopName(UnwindStop s);

// Where the code at a pc comes from; implemented over the process symbolizer's binary cache.
class UnwindCodeLookup {
 public:
  struct Code {
    const CfiTable* cfi = nullptr;  // may be null (no CFI in the binary)
    const GoPclntab* go = nullptr;  // non-null for Go binaries
    uint64_t bias = 0;              // runtime address - link-time address
    // Go binaries with cgo (link-time addresses; 0: unknown): see FindGoCgoCall. Lets a sample
    // in C code called through cgo keep the runtime.cgocall frame, which neither the C stack
    // nor the frame-pointer chain holds.
    const ElfFile* elf = nullptr;
    uint64_t cgocall_entry = 0;
    uint64_t asmcgocall_return = 0;
  };
  virtual ~UnwindCodeLookup() = default;
  // False if `pc` (a runtime address) is not inside a mapped binary.
  virtual bool Find(uint64_t pc, Code* out) = 0;
};

struct UnwindOptions {
  size_t max_frames = 127;
  // fp_ips did not start at regs.bp (StackSample::fp_walk_scanned): only a part of it that
  // continues a return address the unwinder found is used.
  bool fp_ips_scanned = false;
  // The frame pointer fp_ips[1..] were walked from, when it is not regs.bp (0: regs.bp). The walk
  // continues the unwound stack where the last frame unwound holds that frame pointer (C code
  // called through cgo: the goroutine's, whatever C did with rbp).
  uint64_t fp_ips_bp = 0;
};

struct UnwindResult {
  // Leaf first, like StackSample::user_ips: ips[0] is the sampled pc, callers are return
  // addresses (the pc interrupted by a signal is stored + 1 so that callers' "- 1" lands on it).
  std::vector<uint64_t> ips;
  UnwindStop stop = UnwindStop::kEndOfStack;
  size_t unwound_frames = 0;   // frames found by the unwinder (ips[0] included)
  size_t stitched_frames = 0;  // frames appended from the frame-pointer chain
};

// Unwinds one sample. `stack` holds the user stack memory starting at regs.sp. `fp_ips` is the
// kernel's frame-pointer walk (StackSample::user_ips), used only to stitch. `out->ips` is reused
// (no allocation once its capacity suffices).
void Unwind(const UserRegs& regs, absl::string_view stack, const std::vector<uint64_t>& fp_ips,
            UnwindCodeLookup* lookup, const UnwindOptions& options, UnwindResult* out);

// Evaluates a DWARF expression as CFI uses it (exposed for tests). `initial` is pushed first
// when `push_initial`. Registers known: rip (16), rsp (7), rbp (6). `read` reads 8 bytes.
template <typename ReadFn>
bool EvalDwarfExpr(absl::string_view expr, uint64_t rip, uint64_t rsp, uint64_t rbp,
                   bool push_initial, uint64_t initial, ReadFn read, uint64_t* result);

}  // namespace pprof_sidecar

#include "agent/unwind/dwarf_expr_inl.h"  // IWYU pragma: export

#endif  // PPROF_SIDECAR_AGENT_UNWIND_UNWINDER_H_
