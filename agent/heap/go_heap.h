// Reading a Go program's own sampled heap profile out of its memory.
//
// Every Go program samples allocations (one per runtime.MemProfileRate bytes on average) into
// heap-profile buckets: runtime.mbuckets heads a list (linked through bucket.allnext) of
//   bucket header {next, allnext, typ, hash, size, nstk}  (6 words)
//   stack         [nstk]uintptr return PCs, leaf first
//   memRecord     {active, future[3]} of memRecordCycle:
//                   Go 1.19-1.26: {allocs, frees, alloc_bytes, free_bytes} (4 words)
//                   Go 1.27+:     {allocs, frees} (bytes are counts x size)
// Published values follow the runtime's 3-cycle scheme keyed by runtime.mProfCycle; ReadGoHeap
// reproduces exactly what runtime.MemProfile returns (which folds future[cycle % 3] into active,
// and when no GC has completed yet, all of future) without writing to the target. The record
// layout is chosen by the binary's Go release (its build info) and checked on every read.
//
// The variables are located by agent/goruntime/go_heap_vars.h (each binary once, by the
// Go-runtime reader's cache: GoBinary::heap_vars). ReadGoHeap checks what it finds there (bucket
// types, stack depths, bytes = counts x size).
#ifndef PPROF_SIDECAR_AGENT_HEAP_GO_HEAP_H_
#define PPROF_SIDECAR_AGENT_HEAP_GO_HEAP_H_

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/goruntime/go_heap_vars.h"
#include "agent/goruntime/process_memory.h"
#include "agent/heap/heap_snapshot.h"

namespace pprof_sidecar {

struct GoHeapReadLimits {
  size_t max_buckets = 1 << 20;
  size_t max_stack = 1024;  // Go 1.23's maxProfStackDepth
  // A probe of the records' validity: stop after max_buckets with what was read (a partial
  // snapshot) instead of failing with ResourceExhausted.
  bool stop_at_max_buckets = false;
};

// Reads the buckets through `mem`. `runtime_vars` holds *runtime* addresses (link-time + load
// bias). FailedPrecondition if MemProfileRate is 0 (memory profiling disabled); DataLoss if the
// bucket list is inconsistent (not a Go heap profile at those addresses, or corrupted).
absl::StatusOr<HeapSnapshot> ReadGoHeap(MemoryReader& mem, const GoHeapVars& runtime_vars,
                                        const GoHeapReadLimits& limits = GoHeapReadLimits());

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_HEAP_GO_HEAP_H_
