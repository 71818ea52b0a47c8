#include "agent/heap/go_heap.h"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"

namespace pprof_sidecar {
namespace {

// runtime.bucket header: next, allnext, typ, hash, size, nstk (one word each).
constexpr size_t kBucketHeaderSize = 6 * 8;
constexpr uint64_t kMemProfileBucketType = 1;  // runtime.memProfile
constexpr int kMaxReadAttempts = 4;
constexpr size_t kSpeculativeStack = 32;  // maxStack before Go 1.23

struct RawBucket {
  HeapRecord rec;
  uint64_t cyc[4][4];  // active, future[0..2]; each allocs, frees, alloc_bytes, free_bytes
  // The 16 words after the stack read as Go <= 1.26's memRecord (`have_wide`: all were readable).
  uint64_t wide[16];
  bool have_wide = false;
};

// Whether `rb` holds Go <= 1.26's memRecord: every cycle keeps bytes = count x size (a bucket is
// one allocation size; Go 1.27 dropped the byte counters for that reason) and the published
// frees never exceed the published allocations. nullopt: no counts to judge by.
std::optional<bool> LooksFourWord(const RawBucket& rb) {
  if (!rb.have_wide || rb.rec.size == 0) return std::nullopt;
  bool any = false, ok = rb.wide[1] <= rb.wide[0];
  for (int c = 0; c < 4; ++c) {
    const uint64_t* w = rb.wide + 4 * c;
    any = any || w[0] != 0 || w[1] != 0;
    ok = ok && w[2] == w[0] * rb.rec.size && w[3] == w[1] * rb.rec.size;
  }
  if (!any) return std::nullopt;
  return ok;
}

// The layout the release implies must be the one the records show. A record torn by a
// concurrent update can look wrong, so the majority of the buckets holding counts decides.
absl::Status CheckRecords(const std::vector<RawBucket>& raw, const GoHeapVars& vars) {
  size_t counted = 0, four = 0;
  for (const RawBucket& rb : raw) {
    std::optional<bool> f = LooksFourWord(rb);
    if (!f) continue;
    ++counted;
    four += *f;
  }
  const bool expect_four = vars.cycle_words == 4;
  if (counted == 0 || (expect_four ? four * 2 > counted : four * 2 <= counted)) {
    return absl::OkStatus();
  }
  return absl::DataLossError(absl::StrCat(
      expect_four ? counted - four : four, " of ", counted,
      " heap profile buckets do not hold runtime.memRecord as ",
      vars.go_version.empty() ? "the assumed Go release" : vars.go_version, " lays it out (",
      vars.cycle_words, "-word cycles): the Go release changed the heap profile's layout"));
}

}  // namespace

absl::StatusOr<HeapSnapshot> ReadGoHeap(MemoryReader& mem, const GoHeapVars& vars,
                                        const GoHeapReadLimits& limits) {
  absl::StatusOr<uint64_t> rate = mem.ReadU64(vars.mem_profile_rate);
  if (!rate.ok()) return rate.status();
  if (static_cast<int64_t>(*rate) <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "memory profiling is disabled in the target: runtime.MemProfileRate is ",
        static_cast<int64_t>(*rate),
        " (the program set it to 0, or the linker turned profiling off because nothing in the "
        "binary can read a heap profile: import runtime/pprof or net/http/pprof, or reference "
        "runtime.MemProfile, to keep it on)"));
  }
  if (vars.cycle_words != 2 && vars.cycle_words != 4) {
    return absl::InvalidArgumentError(absl::StrCat("bad memRecordCycle size ", vars.cycle_words));
  }
  const size_t cw = vars.cycle_words, record_words = 4 * cw;
  HeapSnapshot snap;
  snap.mem_profile_rate = static_cast<int64_t>(*rate);
  std::vector<RawBucket> raw;
  uint32_t cycle_word = 0;
  for (int attempt = 0;; ++attempt) {
    raw.clear();
    absl::StatusOr<uint32_t> c0 = mem.ReadU32(vars.mprof_cycle);
    if (!c0.ok()) return c0.status();
    absl::StatusOr<uint64_t> head = mem.ReadU64(vars.mbuckets);
    if (!head.ok()) return head.status();
    std::vector<uint64_t> words;
    for (uint64_t b = *head; b != 0;) {
      if (raw.size() >= limits.max_buckets) {
        if (limits.stop_at_max_buckets) break;
        return absl::ResourceExhaustedError(absl::StrCat(
            "more than ", limits.max_buckets, " heap profile buckets (or a cyclic list)"));
      }
      if (b % 8 != 0) {
        return absl::DataLossError(absl::StrCat("misaligned heap bucket 0x", absl::Hex(b)));
      }
      // One read covers the header, up to kSpeculativeStack frames and the memRecord; deeper
      // stacks (Go 1.23+) or the end of a mapping need a second, exact read.
      words.resize(6 + kSpeculativeStack + 16);  // the longest memRecord of any release
      absl::StatusOr<size_t> got = mem.ReadPartial(b, words.data(), words.size() * 8);
      if (!got.ok() || *got < kBucketHeaderSize) {
        if (absl::Status st = mem.Read(b, words.data(), kBucketHeaderSize); !st.ok()) return st;
        got = kBucketHeaderSize;
      }
      uint64_t hdr[6];
      memcpy(hdr, words.data(), sizeof(hdr));
      const uint64_t typ = hdr[2], size = hdr[4], nstk = hdr[5];
      if (typ != kMemProfileBucketType || nstk > limits.max_stack) {
        return absl::DataLossError(absl::StrCat("heap bucket 0x", absl::Hex(b),
                                                " is not a memory profile bucket (type ", typ, ", ",
                                                nstk, " frames)"));
      }
      const size_t need = 6 + nstk + record_words;
      if (need > words.size() || *got < need * 8) {
        words.resize(std::max(need, 6 + nstk + 16));
        got = mem.ReadPartial(b, words.data(), words.size() * 8);
        if (!got.ok() || *got < need * 8) {
          if (absl::Status st = mem.Read(b, words.data(), need * 8); !st.ok()) return st;
          got = need * 8;
        }
      }
      words.erase(words.begin(), words.begin() + 6);
      RawBucket rb;
      rb.rec.bucket = b;
      rb.rec.size = size;
      rb.have_wide = *got >= (6 + nstk + 16) * 8;
      if (rb.have_wide) memcpy(rb.wide, words.data() + nstk, sizeof(rb.wide));
      rb.rec.stack.assign(words.begin(), words.begin() + nstk);
      for (size_t c = 0; c < 4; ++c) {
        const uint64_t* w = words.data() + nstk + c * cw;
        rb.cyc[c][0] = w[0];
        rb.cyc[c][1] = w[1];
        // Go 1.27+ keep counts only: each bucket holds one allocation size.
        rb.cyc[c][2] = cw == 4 ? w[2] : w[0] * size;
        rb.cyc[c][3] = cw == 4 ? w[3] : w[1] * size;
      }
      raw.push_back(std::move(rb));
      b = hdr[1];  // allnext
    }
    absl::StatusOr<uint32_t> c1 = mem.ReadU32(vars.mprof_cycle);
    if (!c1.ok()) return c1.status();
    cycle_word = *c1;
    // A GC that published or flushed a cycle while we walked may have moved counts between
    // future[] and active: read again.
    if (*c0 == *c1 || attempt + 1 >= kMaxReadAttempts) break;
    ++snap.retries;
  }
  if (absl::Status st = CheckRecords(raw, vars); !st.ok()) return st;
  // As runtime.MemProfile: fold the current cycle's future into active (it does so under lock
  // when called between mProf_NextCycle and mProf_Flush; after the flush that slot is zero).
  snap.cycle = cycle_word >> 1;
  const int index = 1 + static_cast<int>(snap.cycle % 3);
  bool clear = true;
  for (RawBucket& rb : raw) {
    for (int k = 0; k < 4; ++k) rb.cyc[0][k] += rb.cyc[index][k];
    if (rb.cyc[0][0] != 0 || rb.cyc[0][1] != 0) clear = false;
  }
  if (clear) {
    // No GC has published a cycle yet: MemProfile then accumulates all future cycles.
    snap.no_gc_yet = true;
    for (RawBucket& rb : raw) {
      for (int f = 1; f <= 3; ++f) {
        if (f == index) continue;
        for (int k = 0; k < 4; ++k) rb.cyc[0][k] += rb.cyc[f][k];
      }
    }
  }
  snap.records.reserve(raw.size());
  for (RawBucket& rb : raw) {
    rb.rec.allocs = static_cast<int64_t>(rb.cyc[0][0]);
    rb.rec.frees = static_cast<int64_t>(rb.cyc[0][1]);
    rb.rec.alloc_bytes = static_cast<int64_t>(rb.cyc[0][2]);
    rb.rec.free_bytes = static_cast<int64_t>(rb.cyc[0][3]);
    snap.records.push_back(std::move(rb.rec));
  }
  return snap;
}

}  // namespace pprof_sidecar
