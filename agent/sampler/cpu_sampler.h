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

namespace pprof_sidecar {

// User registers at the sample, for unwinders that do not rely on frame pointers.
struct UserRegs {
  uint64_t ip = 0, sp = 0, bp = 0;
};

// One CPU sample of one target thread. Stacks are leaf first. user_ips are from the kernel's
// frame-pointer walk; `user_stack` holds a copy of the top of the user stack starting at regs.sp
// (possibly empty) so that a CFI/pclntab unwinder can plug in later.
struct CpuSample {
  uint32_t pid = 0;  // tgid in the agent's pid namespace
  uint32_t tid = 0;  // thread id in the agent's pid namespace
  uint64_t time_ns = 0;  // CLOCK_MONOTONIC (bpf_ktime_get_ns)
  uint32_t cpu = 0;
  std::vector<uint64_t> kernel_ips;
  std::vector<uint64_t> user_ips;
  UserRegs regs;
  std::string user_stack;
  bool in_kernel = false;          // sample interrupted kernel mode
  bool user_stack_error = false;   // bpf_get_stack for the user stack failed
  bool kernel_stack_error = false;
};

// Monotonic counters, all since the sampler was created.
struct SamplerStats {
  uint64_t samples_seen = 0;        // BPF program runs on a target thread
  uint64_t samples_delivered = 0;   // records delivered to the sink
  uint64_t dropped_ringbuf_full = 0;
  uint64_t user_stack_errors = 0;
  uint64_t kernel_stack_errors = 0;
  uint64_t cpus = 0;                // perf events opened
};

class CpuSampler {
 public:
  using Sink = std::function<void(const CpuSample&)>;
  virtual ~CpuSampler() = default;

  // Opens a software cpu-clock perf event on every online CPU with period 1e9/hz ns and attaches
  // the sampling program. Samples of the targets are delivered to `sink` from the sampler's own
  // thread until Stop(). Errors name the failing syscall and CPU.
  virtual absl::Status Start(int hz, Sink sink) = 0;
  // Replaces the set of target processes (tgids as seen in the agent's pid namespace). Only
  // their threads are ever recorded; an empty set records nothing. Can be called any time.
  virtual absl::Status SetTargets(const std::vector<uint32_t>& tgids) = 0;
  // Detaches everything and joins the reader thread; idempotent. Delivers pending samples first.
  virtual void Stop() = 0;
  virtual bool running() const = 0;
  virtual SamplerStats stats() const = 0;
};

// Tuning of the BPF implementation.
struct BpfCpuSamplerOptions {
  // Bytes of user stack copied at each sample into CpuSample::user_stack (from regs.sp upward),
  // for CFI/pclntab unwinders. 0 disables the copy. Multiple of 8, at most 16384.
  uint32_t user_stack_bytes = 8192;
  // Ring buffer size in bytes (power of two, >= 4096). Each record is ~2 KiB + user_stack_bytes.
  uint32_t ringbuf_bytes = 8u << 20;
};

// The BPF implementation (requires CAP_BPF + CAP_PERFMON or root).
absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSampler();
absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSampler(const BpfCpuSamplerOptions& options);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLER_CPU_SAMPLER_H_
