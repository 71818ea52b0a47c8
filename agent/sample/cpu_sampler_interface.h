// The CPU sampler as the profile pipeline sees it: an interface that hides BPF (the loader is
// agent/sampler/), so that profile windows and HTTP handlers are tested with a fake sampler and
// without privileges.
#ifndef PPROF_SIDECAR_AGENT_SAMPLE_CPU_SAMPLER_INTERFACE_H_
#define PPROF_SIDECAR_AGENT_SAMPLE_CPU_SAMPLER_INTERFACE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
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
  using Sink = std::function<void(const StackSample&)>;
  virtual ~CpuSampler() = default;

  // Starts sampling every target thread once per 1/hz s of its CPU time (see
  // BpfCpuSamplerOptions::clock for how). Samples of the targets are delivered to `sink` from the
  // sampler's own thread until Stop(). Errors name the failing syscall and CPU.
  virtual absl::Status Start(int hz, Sink sink) = 0;
  // Replaces the set of target processes (tgids as seen in the agent's pid namespace). Only
  // their threads are ever recorded; an empty set records nothing. Can be called any time.
  virtual absl::Status SetTargets(const std::vector<uint32_t>& tgids) = 0;
  // The same with what to read of each target besides stacks: for Go targets with label fields,
  // every sample records the running goroutine's label pointer (StackSample::go_labels). Default
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

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLE_CPU_SAMPLER_INTERFACE_H_
