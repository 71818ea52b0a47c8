// The bench build of the BPF CPU sampler (library sampler_bench_build: bpf_cpu_sampler.cc
// compiled with PPROF_SIDECAR_SAMPLER_BENCH over the program built with -DCPU_SAMPLER_BENCH).
// Switches that turn parts of the program off, or time them, to measure what each part costs
// (bench/sampler_bench). The agent's program has them fixed at the defaults below and carries
// neither the switches nor the stage clocks.
#ifndef PPROF_SIDECAR_AGENT_SAMPLER_CPU_SAMPLER_BENCH_H_
#define PPROF_SIDECAR_AGENT_SAMPLER_CPU_SAMPLER_BENCH_H_

#ifndef PPROF_SIDECAR_SAMPLER_BENCH
#error "cpu_sampler_bench.h is for the bench build (link sampler_bench_build)"
#endif

#include <array>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "agent/sampler/cpu_sampler.h"

namespace pprof_sidecar {

struct BpfCpuSamplerBenchKnobs {
  // The frame-pointer walk done by the program (true) or by the kernel's walker, bpf_get_stack.
  bool own_fp_walk = true;
  // Most frames of the frame-pointer walk (1..127) when BpfCpuSamplerOptions turns it on.
  int user_fp_max_frames = 127;
  // Each CPU remembers its last filter verdict (per thread and target set generation).
  bool cache_filter_verdict = true;
  // Frames inside the stack copy are read from the copy rather than from user memory (the
  // default program only; the compat one always reads user memory).
  bool walk_frames_in_copy = true;
  // The program returns at once: the floor of what the BPF statistics measure.
  bool null_program = false;
  // The program clocks each stage of a kept sample (BenchStageNs).
  bool stage_timing = false;
};

// Stages of a kept sample, as clocked with stage_timing: filter, scratch reserve, registers and
// kernel stack, user frame-pointer walk, stack copy, submit.
inline constexpr int kBenchStages = 6;

absl::StatusOr<std::unique_ptr<CpuSampler>> NewBpfCpuSamplerForBench(
    const BpfCpuSamplerOptions& options, const BpfCpuSamplerBenchKnobs& knobs);

// ns spent in each stage over all CPUs since the sampler was created; zeros unless stage_timing.
// `sampler` must come from NewBpfCpuSamplerForBench.
std::array<uint64_t, kBenchStages> BenchStageNs(const CpuSampler& sampler);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLER_CPU_SAMPLER_BENCH_H_
