// pprof labels of goroutines, read from a Go target's memory. A goroutine's g.labels points to
// runtime/pprof's labelMap, which pprof.Do/WithLabels build anew and never modify once a goroutine
// can see it:
//  - Go 1.24+: labelMap{LabelSet{list []label{key, value string}}}, sorted by key;
//  - Go 1.19..1.23: labelMap is a map[string]string and g.labels points to a variable holding the
//    *hmap; it is read through the classic bucket layout (8 string keys, 8 string values and an
//    overflow pointer per bucket), the old buckets of a grow left unfinished included (a map
//    grows while WithLabels fills it and nothing writes to it afterwards).
// Every read is bounded (GoLabelLimits) and checked (the map's count must match the cells found);
// a forged or freed structure yields an error, never unbounded work.
#ifndef PPROF_SIDECAR_AGENT_GORUNTIME_GO_LABELS_H_
#define PPROF_SIDECAR_AGENT_GORUNTIME_GO_LABELS_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/goruntime/go_runtime.h"
#include "agent/goruntime/process_memory.h"
#include "agent/sample/sample_labeler.h"
#include "agent/sample/stack_sample.h"

namespace pprof_sidecar {

struct GoLabelLimits {
  size_t max_labels = 256;
  size_t max_string = 64 << 10;  // bytes of one key or value
  int max_bucket_shift = 8;      // hmap.B: 256 buckets of 272 bytes
  int max_overflow = 16;         // overflow buckets per bucket chain
};

// The label set at runtime address `ptr` (a g.labels value) of a program built with Go 1.`minor`,
// sorted by key. Empty for ptr 0. Unimplemented for releases before 1.19.
absl::StatusOr<SampleLabels> ReadGoLabels(MemoryReader& mem, int minor, uint64_t ptr,
                                          const GoLabelLimits& limits = {});

// The fields a CPU sampler records for labels in a program of `layout` (disabled if the layout
// lacks one or g.m is not at GoLabelFields::kGoGM).
GoLabelFields GoLabelFieldsOf(const GoLayout& layout);

// SampleLabeler over the Go-runtime reader: Fields from the layout of the target's release (read
// from its executable's build info alone: nothing else of the binary is loaded); Labels read
// from its memory, cached by address per process for `ttl` after the read. A set is immutable
// while a goroutine can reach it, but once dropped and collected its memory may hold another set:
// the cache does not lengthen by more than `ttl` the time in which a set freed and reused would
// be misread (the time from the sample to its delivery, ~0.1-0.5 s, is the rest). At most 4,096
// sets per process and 8 processes are kept.
class GoSampleLabeler : public SampleLabeler {
 public:
  explicit GoSampleLabeler(absl::Duration ttl = absl::Milliseconds(100));
  std::optional<GoLabelFields> Fields(uint32_t pid) override;
  std::shared_ptr<const SampleLabels> Labels(uint32_t pid, uint64_t ptr) override;

  struct Stats {
    uint64_t reads = 0;   // label sets read whole
    uint64_t hits = 0;    // answered from the cache
    uint64_t errors = 0;  // sets that could not be read
  };
  Stats stats() const;

 private:
  struct Entry {
    absl::Time read;
    std::shared_ptr<const SampleLabels> labels;
  };
  struct Proc {
    int minor = 0;
    std::unique_ptr<ProcessMemory> mem;
    std::map<uint64_t, Entry> sets;
  };
  const absl::Duration ttl_;
  mutable std::mutex mu_;
  std::map<uint32_t, Proc> procs_;
  Stats stats_;
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_GORUNTIME_GO_LABELS_H_
