// The samples the samplers deliver and the unwinder and profile builders consume: stacks, user
// registers and a copy of the top of the user stack. A neutral header: unwind/ and profile/ include
// it without the sampler (the privileged layer).
#ifndef PPROF_SIDECAR_AGENT_SAMPLE_STACK_SAMPLE_H_
#define PPROF_SIDECAR_AGENT_SAMPLE_STACK_SAMPLE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pprof_sidecar {

// User registers at the sample, for unwinders that do not rely on frame pointers.
struct UserRegs {
  uint64_t ip = 0, sp = 0, bp = 0;
  // Active return probes (uretprobes: the agent's own malloc sampler puts them on the target's
  // allocation functions) replace the return address of each probed call on the stack by their
  // trampoline until the call returns. uret_returns are the real addresses, innermost first, one
  // per trampoline on the stack; uret_trampoline is its address (0: no return probe active).
  uint64_t uret_trampoline = 0;
  std::vector<uint64_t> uret_returns;

  // Whether `pc` is in the trampoline's code (a thread returning through it).
  bool InUretTrampoline(uint64_t pc) const {
    return uret_trampoline != 0 && pc >= uret_trampoline && pc < uret_trampoline + 64;
  }
};

// Puts the real return addresses back into a leaf-first stack (a frame-pointer walk): each
// occurrence of the trampoline, in order, by the next of regs.uret_returns; a leaf executing the
// trampoline by the address it returns to.
inline void RestoreUretReturns(const UserRegs& regs, std::vector<uint64_t>* ips) {
  size_t next = 0;
  for (size_t i = 0; i < ips->size() && next < regs.uret_returns.size(); ++i) {
    uint64_t& ip = (*ips)[i];
    if (ip == regs.uret_trampoline || (i == 0 && regs.InUretTrampoline(ip))) {
      ip = regs.uret_returns[next++];
    }
  }
}

// A goroutine's pprof labels (key, value), sorted by key, as runtime/pprof keeps them.
using SampleLabels = std::vector<std::pair<std::string, std::string>>;

// Where a Go program keeps the running goroutine's pprof labels, for samplers that record them:
// byte offsets of m.curg in runtime.m and of labels in runtime.g of the program's release (g.m is
// at kGoGM in every release the agent knows). Zero: labels are not recorded.
struct GoLabelFields {
  static constexpr uint16_t kGoGM = 48;  // runtime.g.m, Go 1.19..1.27 on amd64
  uint16_t m_curg = 0;
  uint16_t g_labels = 0;
  bool enabled() const { return g_labels != 0 && m_curg != 0; }
  bool operator==(const GoLabelFields& o) const {
    return m_curg == o.m_curg && g_labels == o.g_labels;
  }
};

// A process to sample, and what the sampler reads of it besides stacks.
struct SampleTarget {
  uint32_t tgid = 0;  // in the agent's pid namespace
  GoLabelFields go;
};

// One sample of one target thread, as a sampler delivers it: a CPU sample (perf event or tick)
// or an allocation's stack (malloc sampler). Stacks are leaf first. user_ips are from the
// frame-pointer walk; `user_stack` holds a copy of the top of the user stack starting at
// regs.sp (possibly empty) for the CFI/pclntab unwinder, which reduces the sample in place and
// records how in `unwound`.
struct StackSample {
  uint32_t pid = 0;      // tgid in the agent's pid namespace
  uint32_t tid = 0;      // thread id in the agent's pid namespace
  uint64_t time_ns = 0;  // CLOCK_MONOTONIC (bpf_ktime_get_ns)
  uint32_t cpu = 0;
  // Sampling periods this sample stands for (1 but for tick-clock samples of a thread whose CPU
  // time crossed several period boundaries between two ticks it was caught running at).
  uint32_t weight = 1;
  std::vector<uint64_t> kernel_ips;
  std::vector<uint64_t> user_ips;
  UserRegs regs;
  std::string user_stack;
  bool in_kernel = false;         // sample interrupted kernel mode
  bool user_stack_error = false;  // bpf_get_stack for the user stack failed
  bool kernel_stack_error = false;
  // user_ips did not start at regs.bp, which could not be a frame pointer, but at the first frame
  // record found in user_stack (BpfCpuSamplerOptions::scan_for_frame_record): past user_ips[0]
  // they may skip frames; use them only where they match frames unwound otherwise.
  bool fp_walk_scanned = false;
  // The frame pointer user_ips[1..] were walked from when it is not regs.bp (0: regs.bp): for C
  // code called from Go through cgo, the goroutine's at the switch to the g0 stack.
  uint64_t fp_walk_bp = 0;
  // The unwinder's result (SampleUnwinder, agent/unwind/sample_unwinder.h). Once `done`,
  // user_ips hold the unwound stack and user_stack is empty; `stop` is the UnwindStop value
  // (agent/unwind/unwinder.h) at which the unwinder ended; `stitched`: the stack was completed
  // from the frame-pointer walk.
  struct Unwound {
    bool done = false;
    bool stitched = false;
    uint8_t stop = 0;
  };
  Unwound unwound;
  // Go targets (SampleTarget::go): the runtime address of the label set of the goroutine the
  // sampled thread ran (g.m.curg.labels, as Go's own profiler takes it), 0 if none; `labels`
  // is that set once read from the target (null: none, or not readable).
  uint64_t go_labels = 0;
  std::shared_ptr<const SampleLabels> labels;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLE_STACK_SAMPLE_H_
