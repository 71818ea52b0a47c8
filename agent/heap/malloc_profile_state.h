// User-space half of malloc profiling for C/C++/cgo-free targets: what the BPF program
// (bpf/heap_sampler.bpf.c) reports — sampled allocations with their stacks, frees of sampled
// addresses — accumulated into heap-profile buckets shaped like Go's (one per (stack, size)), so
// the same builder, scaling (runtime/pprof's scaleHeapSample) and delta logic serve both.
//
// NativeHeapSource is what HeapProfiler needs from a running sampler; MallocProfileState is the
// bookkeeping, independent of BPF so that it is unit-tested without privileges.
#ifndef PPROF_SIDECAR_AGENT_HEAP_MALLOC_PROFILE_STATE_H_
#define PPROF_SIDECAR_AGENT_HEAP_MALLOC_PROFILE_STATE_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "agent/heap/heap_snapshot.h"

namespace pprof_sidecar {

struct MallocSamplerStats {
  // BPF counters (summed over CPUs).
  uint64_t calls = 0;             // allocation calls seen
  uint64_t bytes = 0;             // bytes those calls requested
  uint64_t sampled = 0;           // allocations chosen by the byte countdown
  uint64_t recorded = 0;          // sampled allocations reported with their address
  uint64_t frees = 0;             // free calls seen
  uint64_t frees_tracked = 0;     // frees of sampled addresses
  uint64_t live_full = 0;         // sampled allocations not tracked for inuse: live map full
  uint64_t ringbuf_drops = 0;     // sampled allocations lost: ring buffer full
  uint64_t free_drops = 0;        // frees lost: ring buffer full (inuse over-reported)
  uint64_t stack_errors = 0;      // stacks that could not be captured
  uint64_t pending_full = 0;      // sampled calls forgotten between entry and return
  uint64_t pending_mismatch = 0;  // return probes that did not match their entry
  uint64_t failed = 0;            // sampled calls that returned NULL
  uint64_t nested = 0;            // calls made by another probed function (counted there)
  // User space.
  uint64_t live = 0;               // sampled allocations currently tracked
  uint64_t buckets = 0;            // (stack, size) buckets
  uint64_t bucket_overflow = 0;    // allocations put in a stackless bucket: bucket limit reached
  uint64_t unknown_frees = 0;      // free events for addresses not tracked in user space
  uint64_t malformed = 0;          // ring buffer records of unexpected size or kind
  uint64_t unwound = 0;            // sampled stacks unwound from their stack copy (CFI)
  uint64_t stack_copy_errors = 0;  // sampled allocations whose stack could not be copied
  uint64_t probes = 0;             // probe links attached (sessions, or uprobes + uretprobes)
};

// A running malloc sampler attached to one process (see agent/sampler/malloc_sampler.h for the BPF
// one).
class NativeHeapSource {
 public:
  virtual ~NativeHeapSource() = default;
  virtual pid_t pid() const = 0;
  // Buckets as of now, raw sampled counts (unscaled); mem_profile_rate is the sampling rate.
  // Bucket ids are stable for the lifetime of this source (deltas subtract by id).
  virtual HeapSnapshot Snapshot() = 0;
  virtual MallocSamplerStats stats() const = 0;
  // When the probes were attached (allocations before that are not seen).
  virtual absl::Time attached_at() const = 0;
  // Human-readable: which binaries and functions are probed.
  virtual std::string Describe() const = 0;
  // Re-reads the target's mappings and probes allocators mapped since the last look (dlopen'ed,
  // or a C library mapped after an early attach). Returns how many functions were newly probed
  // (0 when the mappings that matter did not change: cheap enough to call every second).
  virtual absl::StatusOr<int> ProbeNewMappings() { return 0; }
};

// Byte intervals between samples for the BPF program's table: `n` quantiles of the exponential
// distribution with mean `mean` (the (i + 0.5) / n quantiles), rescaled so their mean is exactly
// `mean`. A uniformly random entry per draw approximates an exponential variate (the tail is
// cut at ~ln(2n) means).
std::vector<uint64_t> ExponentialIntervals(double mean, size_t n);

// Probability that an allocation of `size` bytes is sampled at mean interval `rate` bytes.
double SampleProbability(uint64_t size, int64_t rate);

// Registers of the allocator's caller right after the sampled call returned.
struct AllocRegs {
  uint64_t ip = 0, sp = 0, bp = 0;
  uint64_t fp_bp = 0;  // the frame pointer fp_ips[1..] were walked from (0: bp)
};
// Unwinds a sampled allocation from `regs` and `stack` (user memory copied from regs.sp), with
// `fp_ips` a frame-pointer walk from regs.fp_bp (heap_alloc_event::user_ips). Writes the stack to
// `out`, leaf first, every entry a return address (out[0] = regs.ip). False: keep the frame-pointer
// walk.
using AllocStackUnwinder =
    std::function<bool(const AllocRegs& regs, absl::string_view stack,
                       const std::vector<uint64_t>& fp_ips, std::vector<uint64_t>* out)>;

class MallocProfileState {
 public:
  struct Limits {
    size_t max_live = 1 << 20;     // tracked live allocations (the BPF live map's size)
    size_t max_buckets = 1 << 16;  // distinct (stack, size) buckets
    size_t max_stack = 127;
  };
  explicit MallocProfileState(Limits limits);

  // A sampled allocation of `size` bytes at `addr` with user stack `ips` (return addresses,
  // leaf first). `tracked`: the BPF live map holds it, so a free will be reported.
  void OnAlloc(uint64_t addr, uint64_t size, const uint64_t* ips, size_t n, bool tracked);
  // A free of a sampled address.
  void OnFree(uint64_t addr);
  // Decodes one ring buffer record of the BPF program (struct heap_event / heap_alloc_event).
  // Returns false (and counts it as malformed) for a record of unexpected size or kind.
  // Allocations that carry a stack copy go through the unwinder, if one is set.
  bool HandleRecord(const void* data, size_t size);
  void SetStackUnwinder(AllocStackUnwinder unwind) { unwind_ = std::move(unwind); }

  HeapSnapshot Snapshot(int64_t rate) const;
  // Fills the user-space fields of `s`.
  void FillStats(MallocSamplerStats* s) const;

 private:
  struct Bucket {
    std::vector<uint64_t> stack;
    uint64_t size = 0;
    int64_t allocs = 0, frees = 0;
  };
  uint32_t BucketFor(const uint64_t* ips, size_t n, uint64_t size);

  const Limits limits_;
  std::vector<Bucket> buckets_;
  absl::flat_hash_map<std::string, uint32_t> bucket_of_key_;  // stack bytes + size -> index
  absl::flat_hash_map<uint64_t, uint32_t> live_;              // address -> bucket index
  uint64_t bucket_overflow_ = 0, unknown_frees_ = 0, malformed_ = 0, unwound_stacks_ = 0;
  AllocStackUnwinder unwind_;
  std::vector<uint64_t> fp_ips_, unwound_;  // reused by HandleRecord
};

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_HEAP_MALLOC_PROFILE_STATE_H_
