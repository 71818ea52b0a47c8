// The BPF CPU sampler of target processes: its options and its factory. The pipeline sees it
// through the CpuSampler interface (agent/sample/cpu_sampler_interface.h).
#ifndef PPROF_SIDECAR_AGENT_SAMPLER_CPU_SAMPLER_H_
#define PPROF_SIDECAR_AGENT_SAMPLER_CPU_SAMPLER_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/sample/cpu_sampler_interface.h"

namespace pprof_sidecar {

// Options of the BPF implementation; the defaults are the production configuration (the bench
// build's extra switches are in cpu_sampler_bench.h).
struct BpfCpuSamplerOptions {
  // What takes the samples.
  //  - kTick: the scheduler tick, which already interrupts every busy CPU HZ times a second: a
  //    program on the tick's hrtimer (tp_btf/hrtimer_expire_entry: no tracefs, no kallsyms; the
  //    tick's hrtimer function is learned when the sampler is created) samples a target thread at
  //    the first tick after its CPU time crossed the next multiple of 1/hz s, the way the kernel
  //    delivers Go's own per-thread profiling timers. No interrupt of its own; rates above HZ
  //    give weighted samples at the tick rate. Needs high-resolution timers. x86-64.
  //  - kPerfCpuClock: a software cpu-clock perf event on every online CPU with period 1e9/hz ns:
  //    any rate, but each sample is an hrtimer interrupt of its own, charged to the sampled
  //    thread.
  //  - kAuto: kTick for hz <= 100 (no kernel ticks slower) when it loads, attaches and fires,
  //    else kPerfCpuClock.
  // The sampler is created ready: every program it will use is loaded and attached (the tick) or
  // was attached once (perf), so that a failure shows at creation, not at the first profile.
  enum class Clock { kAuto, kTick, kPerfCpuClock };
  Clock clock = Clock::kAuto;
  // Which build of the program: kDefault, or kCompat for kernels that lack bpf_loop, bpf_find_vma
  // (5.17), bpf_task_pt_regs (5.15), task storage (5.11). kAuto probes the kernel.
  enum class Variant { kAuto, kDefault, kCompat };
  Variant variant = Variant::kAuto;
  // Most bytes of user stack copied at each sample into StackSample::user_stack (from regs.sp
  // upward), for CFI/pclntab unwinders. 0 disables the copy. Multiple of 8, at most 16384.
  uint32_t user_stack_bytes = 8192;
  // Copy only up to the end of the stack when the program can find it: the running goroutine's
  // g.stack.hi for Go threads, else the end of the memory mapping holding sp. Off: always
  // user_stack_bytes (shortened only where the read would fault).
  bool bound_copy_go = true;
  bool bound_copy_vma = true;
  // The kernel's frame-pointer walk of the user stack (StackSample::user_ips). The unwinder uses it
  // to complete stacks it cannot finish from the copy (Go stack switches).
  bool user_frame_pointer_walk = true;
  // 0: every record wakes the reader thread. Else records are submitted without a wakeup until
  // this many bytes wait in the ring buffer (at most a quarter of it, the default); the reader
  // also polls every poll_interval_ms and on Flush()/Stop(). A wakeup is a self-interrupt on the
  // sampled CPU, charged to the sampled thread.
  uint32_t wakeup_bytes = UINT32_MAX;
  int poll_interval_ms = 100;
  // Ring buffer size in bytes: a power of two >= 4096, or 0 to size it for `expected_hz` samples
  // per second on every online CPU over 400 ms (at least 512 KiB, at most 8 MiB), so that with
  // the default wakeup threshold the 100 ms poll drains it before a wakeup is due. Sampling much
  // faster than expected_hz can overflow it when the reader is slow to run (drops are counted
  // in dropped_ringbuf_full). Records are ~100 bytes + 8 per frame + the stack copy.
  uint32_t ringbuf_bytes = 0;
  int expected_hz = 100;
  // When the sampled rbp cannot start a frame-pointer chain (code that uses rbp as a general
  // register: Go <= 1.20's crypto assembly, C built without frame pointers), the walk starts at
  // the first frame record in the stack copy instead (StackSample::fp_walk_scanned). It lets the
  // unwinder complete stacks deeper than the copy: the chain continues past its end.
  bool scan_for_frame_record = true;
};

// The BPF implementation (requires CAP_BPF + CAP_PERFMON or root).
absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSampler();
absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSampler(const BpfCpuSamplerOptions& options);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLER_CPU_SAMPLER_H_
