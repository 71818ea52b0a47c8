// The bucket shape every heap/allocs source delivers and the heap builder consumes: a Go
// target's runtime buckets (go_heap.h) and the malloc sampler's stacks (malloc_profile_state.h)
// alike. Counts are raw sampled counts, before unsampling.
#ifndef PPROF_SIDECAR_AGENT_HEAP_HEAP_SNAPSHOT_H_
#define PPROF_SIDECAR_AGENT_HEAP_HEAP_SNAPSHOT_H_

#include <cstdint>
#include <vector>

namespace pprof_sidecar {

// One bucket: a stack and allocation size, with its counts (as runtime.MemProfile reports one).
struct HeapRecord {
  uint64_t bucket = 0;          // stable identity of the bucket (a Go bucket's runtime address)
  uint64_t size = 0;            // allocation size class of the bucket
  std::vector<uint64_t> stack;  // return PCs, leaf first
  int64_t allocs = 0, frees = 0, alloc_bytes = 0, free_bytes = 0;
};

struct HeapSnapshot {
  int64_t mem_profile_rate = 0;  // mean bytes between samples
  uint32_t cycle = 0;            // Go: heap profile cycle (GCs completed, modulo wrap)
  bool no_gc_yet = false;        // Go: no cycle published yet: all future cycles were folded in
  std::vector<HeapRecord> records;
  int retries = 0;  // Go: re-reads because a GC published a cycle while reading
};

// Per-bucket difference b - a (buckets matched by `bucket`; buckets only in b count fully).
// Used for ?seconds=N delta profiles. Records whose difference is all zero are dropped.
HeapSnapshot SubtractHeap(const HeapSnapshot& b, const HeapSnapshot& a);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_HEAP_HEAP_SNAPSHOT_H_
