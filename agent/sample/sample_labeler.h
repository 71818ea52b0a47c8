// Labels of CPU samples: what a sampler must record for a target so that its samples can carry
// the running goroutine's pprof labels, and the label set a recorded pointer designates. A
// neutral interface: the CPU profiler uses it without knowing the Go-runtime reader behind it
// (agent/goruntime/go_labels.h).
#ifndef PPROF_SIDECAR_AGENT_SAMPLE_SAMPLE_LABELER_H_
#define PPROF_SIDECAR_AGENT_SAMPLE_SAMPLE_LABELER_H_

#include <cstdint>
#include <memory>
#include <optional>

#include "agent/sample/stack_sample.h"

namespace pprof_sidecar {

class SampleLabeler {
 public:
  virtual ~SampleLabeler() = default;
  // The fields to record with each sample of process `pid`; nullopt when it has none (not a Go
  // program, a release without a known layout). May open the process's executable: slow the
  // first time for a binary. Also forgets what was cached for an earlier process with that pid.
  virtual std::optional<GoLabelFields> Fields(uint32_t pid) = 0;
  // The label set at runtime address `ptr` (StackSample::go_labels) in `pid`, read now; null if
  // it cannot be read (the process is gone, the memory no longer holds a label set) or Fields was
  // not asked for `pid`. Thread-safe.
  virtual std::shared_ptr<const SampleLabels> Labels(uint32_t pid, uint64_t ptr) = 0;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SAMPLE_SAMPLE_LABELER_H_
