// Telling the scheduler tick's hrtimer apart from the other hrtimers of a CPU, from a record of
// their expirations, so that the tick clock needs neither /proc/kallsyms nor the kernel's per-CPU
// variables (which only kernels with CONFIG_KALLSYMS_ALL resolve for BPF). Pure: no BPF.
#ifndef PPROF_SIDECAR_AGENT_SAMPLER_TICK_IDENTIFY_H_
#define PPROF_SIDECAR_AGENT_SAMPLER_TICK_IDENTIFY_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace pprof_sidecar {

// One hrtimer expiration (bpf/cpu_sampler.h cpu_sampler_tick_obs).
struct HrtimerExpiration {
  uint64_t timer = 0;    // the hrtimer's address
  uint64_t fn = 0;       // its function
  int64_t expires = 0;   // its expiry time, ns
  uint64_t stub = 0;     // kernel stack's last frame of a user-mode interrupt, else 0
};

struct TickIdentity {
  uint64_t fn = 0;    // the tick's hrtimer function
  uint64_t stub = 0;  // return address into the interrupt entry stub (0: not seen)
};

// The tick's hrtimer is the one that, on a busy CPU, expires on the tick grid: every interval
// between its consecutive expirations is a multiple of `tick_ns` (1/HZ s: the resolution of
// CLOCK_MONOTONIC_COARSE), at least one of them exactly tick_ns, over at least three
// expirations. All CPUs' ticks share one function. `per_cpu` holds each CPU's expirations in any
// order. NotFound when no timer qualifies (no CPU was busy for three ticks); FailedPrecondition
// when timers with different functions qualify (another periodic hrtimer at exactly HZ).
absl::StatusOr<TickIdentity> IdentifyTick(
    const std::vector<std::vector<HrtimerExpiration>>& per_cpu, int64_t tick_ns);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLER_TICK_IDENTIFY_H_
