#include "agent/heap/malloc_profile_state.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "bpf/heap_sampler.h"

namespace pprof_sidecar {

std::vector<uint64_t> ExponentialIntervals(double mean, size_t n) {
  std::vector<uint64_t> out(n);
  if (n == 0) return out;
  std::vector<double> q(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    q[i] = -std::log((static_cast<double>(i) + 0.5) / static_cast<double>(n));
    sum += q[i];
  }
  const double scale = mean * static_cast<double>(n) / sum;
  // Round while carrying the error forward so the integer table keeps the exact mean.
  double carry = 0;
  for (size_t i = 0; i < n; ++i) {
    const double v = q[i] * scale + carry;
    double r = std::floor(v + 0.5);
    if (r < 1) r = 1;
    carry = v - r;
    out[i] = static_cast<uint64_t>(r);
  }
  return out;
}

double SampleProbability(uint64_t size, int64_t rate) {
  if (rate <= 1) return 1;
  return 1 - std::exp(-static_cast<double>(size) / static_cast<double>(rate));
}

MallocProfileState::MallocProfileState(Limits limits) : limits_(limits) {}

uint32_t MallocProfileState::BucketFor(const uint64_t* ips, size_t n, uint64_t size) {
  if (n > limits_.max_stack) n = limits_.max_stack;
  std::string key(reinterpret_cast<const char*>(ips), n * sizeof(uint64_t));
  key.append(reinterpret_cast<const char*>(&size), sizeof(size));
  auto it = bucket_of_key_.find(key);
  if (it != bucket_of_key_.end()) return it->second;
  if (buckets_.size() >= limits_.max_buckets) {
    // Over the limit: a stackless bucket per size (sizes stay exact for unsampling).
    ++bucket_overflow_;
    std::string okey(reinterpret_cast<const char*>(&size), sizeof(size));
    auto ot = bucket_of_key_.find(okey);
    if (ot != bucket_of_key_.end()) return ot->second;
    if (buckets_.size() >= 2 * limits_.max_buckets) return 0;  // hard cap: the first bucket
    key = std::move(okey);
    n = 0;
  }
  Bucket b;
  b.stack.assign(ips, ips + n);
  b.size = size;
  buckets_.push_back(std::move(b));
  const uint32_t idx = static_cast<uint32_t>(buckets_.size() - 1);
  bucket_of_key_.emplace(std::move(key), idx);
  return idx;
}

void MallocProfileState::OnAlloc(uint64_t addr, uint64_t size, const uint64_t* ips, size_t n,
                                 bool tracked) {
  const uint32_t b = BucketFor(ips, n, size);
  ++buckets_[b].allocs;
  if (!tracked) return;
  auto [it, inserted] = live_.try_emplace(addr, b);
  if (!inserted) {
    // The address was handed out again without a free we saw (a lost free event): the old
    // allocation is gone.
    ++buckets_[it->second].frees;
    it->second = b;
  } else if (live_.size() > limits_.max_live) {
    // Mirrors the BPF map's bound; cannot normally happen since BPF refuses first.
    live_.erase(it);
    ++buckets_[b].frees;
  }
}

void MallocProfileState::OnFree(uint64_t addr) {
  auto it = live_.find(addr);
  if (it == live_.end()) {
    ++unknown_frees_;
    return;
  }
  ++buckets_[it->second].frees;
  live_.erase(it);
  // Give memory back after a mass free (the table never shrinks by itself).
  if (live_.capacity() > 4096 && live_.size() < live_.capacity() / 16) live_.rehash(0);
}

bool MallocProfileState::HandleRecord(const void* data, size_t size) {
  if (size < sizeof(heap_event)) {
    ++malformed_;
    return false;
  }
  heap_event h;
  memcpy(&h, data, sizeof(h));
  if (h.kind == HEAP_EV_FREE) {
    OnFree(h.addr);
    return true;
  }
  constexpr size_t kFixed = offsetof(heap_alloc_event, stack);
  if (h.kind != HEAP_EV_ALLOC || size < kFixed) {
    ++malformed_;
    return false;
  }
  // The BPF ring buffer gives 8-byte aligned records; copied anyway to stay alignment-agnostic.
  heap_alloc_event e;
  memcpy(&e, data, kFixed);
  if (e.stack_len > size - kFixed || e.stack_len > HEAP_SAMPLER_MAX_STACK_COPY) {
    ++malformed_;
    return false;
  }
  const uint32_t nr = std::min<uint32_t>(e.user_nr, HEAP_SAMPLER_MAX_FRAMES);
  const bool tracked = (h.flags & HEAP_EV_F_UNTRACKED) == 0;
  if (unwind_ && e.stack_len > 0) {
    fp_ips_.assign(e.user_ips, e.user_ips + nr);  // __u64 -> uint64_t
    const absl::string_view stack(static_cast<const char*>(data) + kFixed, e.stack_len);
    if (unwind_(AllocRegs{e.ip, e.sp, e.bp, e.fp_bp}, stack, fp_ips_, &unwound_)) {
      ++unwound_stacks_;
      OnAlloc(h.addr, h.size, unwound_.data(), unwound_.size(), tracked);
      return true;
    }
  }
  uint64_t ips[HEAP_SAMPLER_MAX_FRAMES];
  for (uint32_t i = 0; i < nr; ++i) ips[i] = e.user_ips[i];
  OnAlloc(h.addr, h.size, ips, nr, tracked);
  return true;
}

HeapSnapshot MallocProfileState::Snapshot(int64_t rate) const {
  HeapSnapshot s;
  s.mem_profile_rate = rate;
  s.records.reserve(buckets_.size());
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const Bucket& b = buckets_[i];
    if (b.allocs == 0) continue;
    HeapRecord r;
    r.bucket = i + 1;
    r.size = b.size;
    r.stack = b.stack;
    r.allocs = b.allocs;
    r.frees = b.frees;
    r.alloc_bytes = b.allocs * static_cast<int64_t>(b.size);
    r.free_bytes = b.frees * static_cast<int64_t>(b.size);
    s.records.push_back(std::move(r));
  }
  return s;
}

void MallocProfileState::FillStats(MallocSamplerStats* s) const {
  s->live = live_.size();
  s->buckets = buckets_.size();
  s->bucket_overflow = bucket_overflow_;
  s->unknown_frees = unknown_frees_;
  s->malformed = malformed_;
  s->unwound = unwound_stacks_;
}

}  // namespace pprof_sidecar
