// Unprivileged tests of the malloc sampler's user-space half: the interval table, the
// estimator (sampling by bytes, then runtime/pprof's unsampling) on a simulated allocation
// stream, bookkeeping of live allocations, record decoding, and the native profile as
// google/pprof reads it.
#include "agent/heap/malloc_profile_state.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "agent/heap/allocator_probes.h"
#include "agent/heap/heap_profile.h"
#include "bpf/heap_sampler.h"
#include "gtest/gtest.h"
#include "tests/testutil/pprof_summary.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

TEST(ExponentialIntervalsTest, MeanAndShapeOfAnExponential) {
  for (double mean : {1000.0, 524288.0, 4.0e9}) {
    std::vector<uint64_t> t = ExponentialIntervals(mean, HEAP_SAMPLER_INTERVALS);
    ASSERT_EQ(t.size(), HEAP_SAMPLER_INTERVALS);
    double sum = 0;
    size_t above_mean = 0, above_3 = 0;
    for (uint64_t v : t) {
      EXPECT_GE(v, 1u);
      sum += static_cast<double>(v);
      above_mean += static_cast<double>(v) > mean;
      above_3 += static_cast<double>(v) > 3 * mean;
    }
    EXPECT_NEAR(sum / t.size(), mean, mean * 1e-3) << mean;
    // P(X > mean) = e^-1, P(X > 3 mean) = e^-3 for an exponential.
    EXPECT_NEAR(static_cast<double>(above_mean) / t.size(), std::exp(-1.0), 0.01) << mean;
    EXPECT_NEAR(static_cast<double>(above_3) / t.size(), std::exp(-3.0), 0.01) << mean;
  }
}

TEST(SampleProbabilityTest, MatchesPoissonSampling) {
  EXPECT_DOUBLE_EQ(SampleProbability(100, 1), 1);
  EXPECT_NEAR(SampleProbability(524288, 524288), 1 - std::exp(-1.0), 1e-12);
  EXPECT_NEAR(SampleProbability(1, 524288), 1.0 / 524288, 1e-9);
}

// The BPF program's algorithm (a countdown redrawn from the table after each sample), run on a
// stream of allocations of two sizes from two stacks; unsampled totals must match the truth.
TEST(MallocEstimatorTest, UnsampledTotalsMatchTheTruth) {
  const int64_t rate = 64 * 1024;
  const std::vector<uint64_t> table = ExponentialIntervals(rate, HEAP_SAMPLER_INTERVALS);
  std::mt19937_64 rng(42);
  int64_t left = 0;
  auto sampled = [&](uint64_t size) {
    auto draw = [&] { return static_cast<int64_t>(table[rng() % table.size()]); };
    if (left == 0) left = draw();
    left -= static_cast<int64_t>(size);
    if (left > 0) return false;
    left = draw();
    return true;
  };
  MallocProfileState st({});
  const uint64_t big_stack[] = {0x1000, 0x2000}, small_stack[] = {0x1100, 0x2000};
  uint64_t truth_big = 0, truth_small = 0, live_big = 0, addr = 0x10000;
  for (int i = 0; i < 400000; ++i) {
    // 3 bytes at the big site per byte at the small one; sizes on both sides of the rate.
    const uint64_t big = i % 2 ? 3000 : 300000, small = big / 3;
    truth_big += big;
    truth_small += small;
    const bool keep = i % 4 == 0;
    if (sampled(big)) {
      st.OnAlloc(++addr, big, big_stack, 2, true);
      if (!keep) st.OnFree(addr);
    }
    if (keep) live_big += big;
    if (sampled(small)) st.OnAlloc(++addr, small, small_stack, 2, false);
  }
  HeapSnapshot snap = st.Snapshot(rate);
  double est_big = 0, est_small = 0, inuse_big = 0;
  for (const HeapRecord& r : snap.records) {
    auto alloc = ScaleHeapSample(r.allocs, r.alloc_bytes, rate);
    auto inuse = ScaleHeapSample(r.allocs - r.frees, r.alloc_bytes - r.free_bytes, rate);
    (r.stack[0] == 0x1000 ? est_big : est_small) += alloc.second;
    if (r.stack[0] == 0x1000) inuse_big += inuse.second;
  }
  EXPECT_NEAR(est_big / truth_big, 1.0, 0.05);
  EXPECT_NEAR(est_small / truth_small, 1.0, 0.05);
  EXPECT_NEAR(est_big / (est_big + est_small), 0.75, 0.02);
  EXPECT_NEAR(inuse_big / live_big, 1.0, 0.08);
}

TEST(MallocProfileStateTest, LiveBookkeeping) {
  MallocProfileState st({/*max_live=*/2, /*max_buckets=*/2, /*max_stack=*/127});
  const uint64_t a[] = {1, 2}, b[] = {3}, c[] = {4};
  st.OnAlloc(0x100, 10, a, 2, true);
  st.OnAlloc(0x200, 10, a, 2, true);
  st.OnAlloc(0x300, 20, b, 1, false);  // untracked: alloc only
  st.OnFree(0x100);
  st.OnFree(0x999);                   // unknown
  st.OnAlloc(0x200, 10, a, 2, true);  // reuse without a seen free: the old one is gone
  st.OnAlloc(0x400, 30, c, 1, true);  // third (stack, size): over the bucket limit
  MallocSamplerStats s;
  st.FillStats(&s);
  EXPECT_EQ(s.unknown_frees, 1u);
  EXPECT_EQ(s.bucket_overflow, 1u);
  EXPECT_EQ(s.live, 2u);
  HeapSnapshot snap = st.Snapshot(1);
  ASSERT_EQ(snap.records.size(), 3u);
  EXPECT_EQ(snap.records[0].stack, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(snap.records[0].allocs, 3);
  EXPECT_EQ(snap.records[0].frees, 2);
  EXPECT_EQ(snap.records[0].alloc_bytes, 30);
  EXPECT_EQ(snap.records[1].allocs, 1);
  EXPECT_EQ(snap.records[1].frees, 0);
  EXPECT_TRUE(snap.records[2].stack.empty());  // the overflow bucket keeps only the size
  EXPECT_EQ(snap.records[2].size, 30u);
}

TEST(MallocProfileStateTest, DecodesRecords) {
  MallocProfileState st({});
  heap_alloc_event e = {};
  e.hdr.addr = 0x5000;
  e.hdr.size = 64;
  e.hdr.kind = HEAP_EV_ALLOC;
  e.user_nr = 3;
  e.user_ips[0] = 7;
  e.user_ips[1] = 8;
  e.user_ips[2] = 9;
  EXPECT_TRUE(st.HandleRecord(&e, sizeof(e)));
  heap_event f = {};
  f.addr = 0x5000;
  f.kind = HEAP_EV_FREE;
  EXPECT_TRUE(st.HandleRecord(&f, sizeof(f)));
  EXPECT_FALSE(st.HandleRecord(&e, sizeof(heap_event)));  // alloc kind, too short
  f.kind = 77;
  EXPECT_FALSE(st.HandleRecord(&f, sizeof(f)));
  EXPECT_FALSE(st.HandleRecord(&f, 3));
  e.user_nr = 100000;  // clamped
  EXPECT_TRUE(st.HandleRecord(&e, sizeof(e)));
  MallocSamplerStats s;
  st.FillStats(&s);
  EXPECT_EQ(s.malformed, 3u);
  HeapSnapshot snap = st.Snapshot(512);
  ASSERT_EQ(snap.records.size(), 2u);
  EXPECT_EQ(snap.records[0].stack, (std::vector<uint64_t>{7, 8, 9}));
  EXPECT_EQ(snap.records[0].frees, 1);
  EXPECT_EQ(snap.records[1].stack.size(), HEAP_SAMPLER_MAX_FRAMES);
}

// The native profile as google/pprof reads it: four sample types, space/bytes period, values
// scaled like runtime/pprof, allocs defaults to alloc_space.
TEST(NativeHeapProfileTest, ValidProfileWithScaledValues) {
  HeapSnapshot snap;
  snap.mem_profile_rate = 1000;
  HeapRecord r;
  r.bucket = 1;
  r.size = 1000;
  r.stack = {0x401000, 0x402000};
  r.allocs = 10;
  r.frees = 4;
  r.alloc_bytes = 10000;
  r.free_bytes = 4000;
  snap.records.push_back(r);
  HeapProfileParams params;
  params.kind = HeapProfileKind::kAllocs;
  params.native = true;
  params.time = absl::Now();
  absl::StatusOr<std::string> prof = BuildHeapProfile(snap, 1, params, nullptr, nullptr);
  ASSERT_TRUE(prof.ok()) << prof.status();
  const std::string path = testing::MakeTempDir("native_heap") + "/allocs.pb.gz";
  std::ofstream(path, std::ios::binary) << *prof;
  absl::StatusOr<testing::PprofSummary> s = testing::SummarizeProfile(path);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->sample_types.size(), 4u);
  EXPECT_EQ(s->sample_types[0].type, "alloc_objects");
  EXPECT_EQ(s->sample_types[1].type, "alloc_space");
  EXPECT_EQ(s->sample_types[2].type, "inuse_objects");
  EXPECT_EQ(s->sample_types[3].type, "inuse_space");
  EXPECT_EQ(s->sample_types[3].unit, "bytes");
  EXPECT_EQ(s->default_sample_type, "alloc_space");
  EXPECT_EQ(s->period_type.type, "space");
  EXPECT_EQ(s->period, 1000);
  const double scale = 1 / (1 - std::exp(-1.0));
  EXPECT_EQ(s->totals[0], static_cast<int64_t>(10 * scale));
  EXPECT_EQ(s->totals[1], static_cast<int64_t>(10000 * scale));
  EXPECT_EQ(s->totals[2], static_cast<int64_t>(6 * scale));
  EXPECT_EQ(s->totals[3], static_cast<int64_t>(6000 * scale));
  EXPECT_EQ(s->num_locations, 2);  // one per PC, nothing hidden or folded
}

// Probe placement: the first instruction the kernel emulates, when everything before it keeps
// %rsp and the arguments; else the entry.
TEST(PlaceEntryProbeTest, MovesToAnEmulatedInstructionOnlyWhenEntrySemanticsHold) {
  using S = std::string;
  auto at = [](const S& code, uint32_t regs) {
    const ProbePlacement p = PlaceEntryProbe(code, regs);
    return std::make_pair(p.offset, p.emulated);
  };
  const std::pair<size_t, bool> entry{0, false};
  // glibc 2.36 malloc: push %r12 at the entry (emulated).
  EXPECT_EQ(at(S("\x41\x54\x55\x53", 4), kRegRdi), std::make_pair(size_t{0}, true));
  // glibc 2.36 free: test %rdi,%rdi; je rel32 (emulated jcc); push %rbp.
  EXPECT_EQ(at(S("\x48\x85\xff\x0f\x84\xbf\x00\x00\x00\x55", 10), kRegRdi),
            std::make_pair(size_t{3}, true));
  // jemalloc 5.3 malloc: cmp $0x1000,%rdi; ja rel32.
  EXPECT_EQ(at(S("\x48\x81\xff\x00\x10\x00\x00\x0f\x87\x93\x00\x00\x00", 13), kRegRdi),
            std::make_pair(size_t{7}, true));
  // After endbr64: a short je.
  EXPECT_EQ(at(S("\xf3\x0f\x1e\xfa\x48\x85\xff\x74\x10\x41\x54", 11), kRegRdi),
            std::make_pair(size_t{7}, true));
  EXPECT_EQ(at(S("\xf3\x0f\x1e\xfa\x55", 5), kRegRdi), std::make_pair(size_t{4}, true));
  // mimalloc 2.0 malloc: mov rip-relative,%rax; mov %rdi,%rsi; mov %fs:(%rax),%rdi overwrites
  // the size argument before the first jcc: the entry.
  EXPECT_EQ(at(S("\x48\x8b\x05\x49\xb4\x00\x00\x48\x89\xfe\x64\x48\x8b\x38\x48\x81\xfe\x00\x04"
                 "\x00\x00\x77\x29",
                 23),
               kRegRdi),
            entry);
  // Following register moves (the programs read arguments through the cookie): the size is in
  // rsi at the ja.
  const S mimalloc(
      "\x48\x8b\x05\x49\xb4\x00\x00\x48\x89\xfe\x64\x48\x8b\x38\x48\x81\xfe\x00\x04"
      "\x00\x00\x77\x29",
      23);
  const ProbePlacement moved = PlaceEntryProbe(mimalloc, kRegRdi, true);
  EXPECT_EQ(moved.offset, 21u);
  EXPECT_TRUE(moved.emulated);
  EXPECT_EQ(moved.arg_reg[0], 6);             // rsi
  EXPECT_EQ(moved.ArgCookie(), uint64_t{7});  // rsi + 1 in the first argument's 4 bits
  // A 32-bit mov (89 fe without REX.W) copies only the low half: not a copy of the argument.
  EXPECT_EQ(at(S("\x89\xfe\x64\x48\x8b\x38\x77\x29", 8), kRegRdi), entry);
  EXPECT_EQ(PlaceEntryProbe(S("\x89\xfe\x64\x48\x8b\x38\x77\x29", 8), kRegRdi, true).offset, 0u);
  // Unmoved arguments: cookie 0 (the programs read the ABI registers).
  EXPECT_EQ(PlaceEntryProbe(S("\x48\x85\xff\x74\x02\x55", 6), kRegRdi, true).ArgCookie(), 0u);
  // The same code is fine for a function that reads no argument register.
  EXPECT_EQ(at(S("\x48\x8b\x05\x49\xb4\x00\x00\x48\x89\xfe\x64\x48\x8b\x38\x48\x81\xfe\x00\x04"
                 "\x00\x00\x77\x29",
                 23),
               0),
            std::make_pair(size_t{21}, true));
  // sub $8,%rsp before the jcc: the return address is no longer at %rsp.
  EXPECT_EQ(at(S("\x48\x83\xec\x08\x74\x10", 6), kRegRdi), entry);
  // A pop, or an instruction not understood (syscall), stops the walk.
  EXPECT_EQ(at(S("\x5d\x74\x10", 3), kRegRdi), entry);
  EXPECT_EQ(at(S("\x0f\x05\x74\x10", 4), kRegRdi), entry);
  // A branch later in the function back into the skipped prefix (to the probed je): the probe
  // would run twice per call; the entry.
  EXPECT_EQ(at(S("\x48\x85\xff\x74\x02\x55\x5d\xeb\xfa", 9), kRegRdi), entry);
  // ... while a branch back to the entry itself is harmless.
  EXPECT_EQ(at(S("\x48\x85\xff\x74\x02\x55\x5d\xeb\xf7", 9), kRegRdi),
            std::make_pair(size_t{3}, true));
  // Code that does not decode to its end (here truncated): branches into the prefix cannot be
  // ruled out; and empty code.
  EXPECT_EQ(at(S("\x48\x85\xff\x0f\x84", 5), kRegRdi), entry);
  EXPECT_EQ(at(S(""), kRegRdi), entry);
}

}  // namespace
}  // namespace pprof_sidecar
