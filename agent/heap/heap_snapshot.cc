#include "agent/heap/heap_snapshot.h"

#include <map>
#include <utility>

namespace pprof_sidecar {

HeapSnapshot SubtractHeap(const HeapSnapshot& b, const HeapSnapshot& a) {
  std::map<uint64_t, const HeapRecord*> old;
  for (const HeapRecord& r : a.records) old[r.bucket] = &r;
  HeapSnapshot d;
  d.mem_profile_rate = b.mem_profile_rate;
  d.cycle = b.cycle;
  d.no_gc_yet = b.no_gc_yet;
  d.retries = a.retries + b.retries;
  for (const HeapRecord& r : b.records) {
    HeapRecord x = r;
    auto it = old.find(r.bucket);
    if (it != old.end()) {
      x.allocs -= it->second->allocs;
      x.frees -= it->second->frees;
      x.alloc_bytes -= it->second->alloc_bytes;
      x.free_bytes -= it->second->free_bytes;
    }
    if (x.allocs == 0 && x.frees == 0 && x.alloc_bytes == 0 && x.free_bytes == 0) continue;
    d.records.push_back(std::move(x));
  }
  return d;
}

}  // namespace pprof_sidecar
