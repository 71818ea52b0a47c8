// CPU sampling of target processes. The interface hides BPF so that the profile pipeline and
// HTTP handlers can be tested with a fake sampler and without privileges.
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
#include "agent/sample/stack_sample.h"

namespace pprof_sidecar {

// Monotonic counters, all since the sampler was created.
struct SamplerStats {
  uint64_t samples_seen = 0;        // BPF program runs on a target thread
  uint64_t samples_delivered = 0;   // records delivered to the sink
  uint64_t samples_after_stop = 0;  // records a program run racing with Stop() left behind
  uint64_t dropped_ringbuf_full = 0;
  uint64_t user_stack_errors = 0;
  uint64_t kernel_stack_errors = 0;
  uint64_t cpus = 0;                    // online CPUs sampled (perf events opened, or ticked)
  bool tick_clock = false;              // sampling at the scheduler tick, else cpu-clock events
  uint64_t tick_state_errors = 0;       // tick clock: threads skipped for want of per-thread state
  uint64_t user_stack_copy_errors = 0;  // no byte of the user stack could be copied
  uint64_t copy_bounded_go = 0;         // stack copies bounded by the running goroutine's stack end
  uint64_t copy_bounded_vma = 0;        // ... by the end of the stack's memory mapping
  uint64_t stack_vma_lookups = 0;       // ... of which looked up (bpf_find_vma), not remembered
  uint64_t bytes_copied = 0;            // user stack bytes delivered
  // The BPF program's own cost, from the kernel's BPF statistics (kernel.bpf_stats_enabled=1 or
  // an fd of bpf_enable_stats(BPF_STATS_RUN_TIME) held by anyone; else both stay 0). Counts every
  // invocation, including those filtered out because they interrupted another process.
  uint64_t bpf_run_time_ns = 0;
  uint64_t bpf_run_count = 0;
};

// How a sampler samples, for /healthz and /metrics.
struct SamplerInfo {
  // "tick" or "perf": the clock samples are taken with when the profile's rate allows the tick.
  std::string clock;
  // What the tick program is attached to ("tp_btf/hrtimer_expire_entry", ...), empty without it.
  std::string tick_attach;
  // Why the tick clock is not available (empty when it is).
  std::string tick_unavailable;
  // "default", or "compat" on kernels without the newer BPF features.
  std::string program_variant;
  // Kernel features the running kernel lacks, each with what the agent does without it.
  std::vector<std::string> reduced;
};

class CpuSampler {
 public:
  using Sink = std::function<void(const CpuSample&)>;
  virtual ~CpuSampler() = default;

  // Starts sampling every target thread once per 1/hz s of its CPU time (see
  // BpfCpuSamplerOptions::clock for how). Samples of the targets are delivered to `sink` from the
  // sampler's own thread until Stop(). Errors name the failing syscall and CPU.
  virtual absl::Status Start(int hz, Sink sink) = 0;
  // Replaces the set of target processes (tgids as seen in the agent's pid namespace). Only
  // their threads are ever recorded; an empty set records nothing. Can be called any time.
  virtual absl::Status SetTargets(const std::vector<uint32_t>& tgids) = 0;
  // The same with what to read of each target besides stacks: for Go targets with label fields,
  // every sample records the running goroutine's label pointer (CpuSample::go_labels). Default
  // (samplers that record no labels): SetTargets of the tgids.
  virtual absl::Status SetSampleTargets(const std::vector<SampleTarget>& targets) {
    std::vector<uint32_t> tgids;
    for (const SampleTarget& t : targets) tgids.push_back(t.tgid);
    return SetTargets(tgids);
  }
  // Stops sampling (detaches the perf events; the tick program, kept attached for the next Start,
  // is disabled) and joins the reader thread; idempotent. Delivers pending samples first.
  virtual void Stop() = 0;
  // Returns once every sample the kernel recorded before the call has been delivered to the
  // sink (records may otherwise wait up to the reader's poll interval). No-op when stopped.
  virtual void Flush() {}
  virtual bool running() const = 0;
  virtual SamplerStats stats() const = 0;
  virtual SamplerInfo info() const { return SamplerInfo(); }
};

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
  // Most bytes of user stack copied at each sample into CpuSample::user_stack (from regs.sp
  // upward), for CFI/pclntab unwinders. 0 disables the copy. Multiple of 8, at most 16384.
  uint32_t user_stack_bytes = 8192;
  // Copy only up to the end of the stack when the program can find it: the running goroutine's
  // g.stack.hi for Go threads, else the end of the memory mapping holding sp. Off: always
  // user_stack_bytes (shortened only where the read would fault).
  bool bound_copy_go = true;
  bool bound_copy_vma = true;
  // The kernel's frame-pointer walk of the user stack (CpuSample::user_ips). The unwinder uses it
  // to complete stacks it cannot finish from the copy (Go stack switches).
  bool user_frame_pointer_walk = true;
  int user_fp_max_frames = 127;  // 1..127
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
  // the first frame record in the stack copy instead (CpuSample::fp_walk_scanned). It lets the
  // unwinder complete stacks deeper than the copy: the chain continues past its end.
  bool scan_for_frame_record = true;
};

// The BPF implementation (requires CAP_BPF + CAP_PERFMON or root).
absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSampler();
absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSampler(const BpfCpuSamplerOptions& options);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLER_CPU_SAMPLER_H_
