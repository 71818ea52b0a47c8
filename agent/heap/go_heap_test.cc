// Unit tests of the Go heap bucket reader (fake address space) and of locating the runtime's
// variables from machine code, checked against .symtab in real binaries of every Go version.
#include "agent/heap/go_heap.h"

#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/heap/heap_profile.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/testutil.h"

namespace pprof_sidecar {
namespace {

using ::pprof_sidecar::testing::BuildGo;
using ::pprof_sidecar::testing::GoVersionName;
using ::pprof_sidecar::testing::GoVersions;
using ::pprof_sidecar::testing::kGoStrippedPie;
using ::pprof_sidecar::testing::MakeTempDir;
using ::pprof_sidecar::testing::TestDataDir;

// A sparse fake address space of word-granular regions.
class FakeMemory : public MemoryReader {
 public:
  void Put64(uint64_t addr, uint64_t v) { PutBytes(addr, &v, 8); }
  void Put32(uint64_t addr, uint32_t v) { PutBytes(addr, &v, 4); }
  void PutBytes(uint64_t addr, const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) bytes_[addr + i] = static_cast<const char*>(p)[i];
  }
  absl::Status Read(uint64_t addr, void* buf, size_t len) override {
    for (size_t i = 0; i < len; ++i) {
      auto it = bytes_.find(addr + i);
      if (it == bytes_.end())
        return absl::DataLossError(absl::StrCat("unmapped 0x", absl::Hex(addr + i)));
      static_cast<char*>(buf)[i] = it->second;
    }
    return absl::OkStatus();
  }

 private:
  std::map<uint64_t, char> bytes_;
};

constexpr uint64_t kMbuckets = 0x1000, kCycle = 0x1010, kRate = 0x1020;

struct FakeBucket {
  uint64_t size;
  std::vector<uint64_t> stack;
  uint64_t cyc[4][4];  // active, future[0..2]
};

// Lays out buckets as the runtime does and links them through allnext (first = head).
void PutBuckets(FakeMemory& m, const std::vector<FakeBucket>& bs, uint32_t cycle_word,
                int64_t rate) {
  m.Put64(kRate, static_cast<uint64_t>(rate));
  m.Put32(kCycle, cycle_word);
  uint64_t addr = 0x100000;
  std::vector<uint64_t> addrs;
  for (const auto& b : bs) {
    addrs.push_back(addr);
    addr += 48 + 8 * b.stack.size() + 128 + 64;
  }
  m.Put64(kMbuckets, addrs.empty() ? 0 : addrs[0]);
  for (size_t i = 0; i < bs.size(); ++i) {
    uint64_t a = addrs[i];
    m.Put64(a, 0);                                         // next (hash chain)
    m.Put64(a + 8, i + 1 < bs.size() ? addrs[i + 1] : 0);  // allnext
    m.Put64(a + 16, 1);                                    // memProfile
    m.Put64(a + 24, 0xabc);
    m.Put64(a + 32, bs[i].size);
    m.Put64(a + 40, bs[i].stack.size());
    for (size_t k = 0; k < bs[i].stack.size(); ++k) m.Put64(a + 48 + 8 * k, bs[i].stack[k]);
    m.PutBytes(a + 48 + 8 * bs[i].stack.size(), bs[i].cyc, sizeof(bs[i].cyc));
  }
}

GoHeapVars Vars() {
  GoHeapVars v;
  v.mbuckets = kMbuckets;
  v.mprof_cycle = kCycle;
  v.mem_profile_rate = kRate;
  return v;
}

TEST(ReadGoHeapTest, FoldsCurrentCycleLikeMemProfile) {
  FakeMemory m;
  // cycle 4 -> index 1: future[1] is folded into active; future[2], future[0] are not.
  FakeBucket a{64,
               {0x401000, 0x402000},
               {{10, 4, 640, 256}, {1, 1, 64, 64}, {2, 0, 128, 0}, {3, 0, 192, 0}}};
  FakeBucket b{4096, {0x403000}, {{1, 0, 4096, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}}};
  PutBuckets(m, {a, b}, 4 << 1, 512 * 1024);
  auto snap = ReadGoHeap(m, Vars());
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->mem_profile_rate, 512 * 1024);
  EXPECT_EQ(snap->cycle, 4u);
  EXPECT_FALSE(snap->no_gc_yet);
  ASSERT_EQ(snap->records.size(), 2u);
  const HeapRecord& r = snap->records[0];
  EXPECT_EQ(r.size, 64u);
  EXPECT_THAT(r.stack, ::testing::ElementsAre(0x401000, 0x402000));
  EXPECT_EQ(r.allocs, 10 + 2);
  EXPECT_EQ(r.frees, 4);
  EXPECT_EQ(r.alloc_bytes, 640 + 128);
  EXPECT_EQ(r.free_bytes, 256);
  EXPECT_EQ(snap->records[1].alloc_bytes, 4096);
}

TEST(ReadGoHeapTest, BeforeFirstGcAllFutureCyclesCount) {
  FakeMemory m;
  // Cycle 0: allocations go to future[2], frees to future[1]; nothing published yet.
  FakeBucket a{32, {0x401000}, {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 1, 0, 32}, {7, 0, 224, 0}}};
  PutBuckets(m, {a}, 0, 1024);
  auto snap = ReadGoHeap(m, Vars());
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_TRUE(snap->no_gc_yet);
  ASSERT_EQ(snap->records.size(), 1u);
  EXPECT_EQ(snap->records[0].allocs, 7);
  EXPECT_EQ(snap->records[0].frees, 1);
  EXPECT_EQ(snap->records[0].alloc_bytes, 224);
}

TEST(ReadGoHeapTest, RateZeroIsAClearError) {
  FakeMemory m;
  PutBuckets(m, {}, 0, 0);
  auto snap = ReadGoHeap(m, Vars());
  ASSERT_FALSE(snap.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(snap.status()));
  EXPECT_THAT(std::string(snap.status().message()), ::testing::HasSubstr("MemProfileRate is 0"));
}

TEST(ReadGoHeapTest, RejectsCorruptLists) {
  FakeMemory m;
  FakeBucket a{32, {0x401000}, {}};
  PutBuckets(m, {a}, 2, 1024);
  m.Put64(0x100000 + 16, 2);  // block profile bucket type
  EXPECT_TRUE(absl::IsDataLoss(ReadGoHeap(m, Vars()).status()));
  m.Put64(0x100000 + 16, 1);
  m.Put64(0x100000 + 8, 0x100000);  // allnext points to itself
  GoHeapReadLimits lim;
  lim.max_buckets = 1000;
  EXPECT_TRUE(absl::IsResourceExhausted(ReadGoHeap(m, Vars(), lim).status()));
  // A bounded probe (the agent's health check) stops at the bound with what it read.
  lim.stop_at_max_buckets = true;
  auto probe = ReadGoHeap(m, Vars(), lim);
  ASSERT_TRUE(probe.ok()) << probe.status();
  EXPECT_GE(probe->records.size(), 1u);
  EXPECT_LE(probe->records.size(), 1000u);
  m.Put64(0x100000 + 8, 0x7777000);  // unmapped
  EXPECT_FALSE(ReadGoHeap(m, Vars()).ok());
}

TEST(SubtractHeapTest, MatchesBucketsByAddressAndDropsZeros) {
  HeapSnapshot a, b;
  a.records = {{0x10, 8, {1}, 5, 1, 40, 8}, {0x20, 8, {2}, 3, 0, 24, 0}};
  b.records = {
      {0x10, 8, {1}, 9, 2, 72, 16}, {0x20, 8, {2}, 3, 0, 24, 0}, {0x30, 16, {3}, 1, 0, 16, 0}};
  b.mem_profile_rate = 100;
  HeapSnapshot d = SubtractHeap(b, a);
  ASSERT_EQ(d.records.size(), 2u);
  EXPECT_EQ(d.records[0].bucket, 0x10u);
  EXPECT_EQ(d.records[0].allocs, 4);
  EXPECT_EQ(d.records[0].free_bytes, 8);
  EXPECT_EQ(d.records[1].bucket, 0x30u);
  EXPECT_EQ(d.mem_profile_rate, 100);
}

TEST(ScaleHeapSampleTest, UnsamplesLikeRuntimePprof) {
  // One sampled object of exactly the rate: probability 1 - 1/e.
  auto s = ScaleHeapSample(1, 1000, 1000);
  EXPECT_EQ(s.first, static_cast<int64_t>(1 / (1 - std::exp(-1.0))));
  EXPECT_EQ(s.second, static_cast<int64_t>(1000 / (1 - std::exp(-1.0))));
  // Large objects are (almost) always sampled; rate 1 means every allocation.
  EXPECT_EQ(ScaleHeapSample(2, int64_t{2} << 30, 512 * 1024),
            std::make_pair(int64_t{2}, int64_t{2} << 30));
  EXPECT_EQ(ScaleHeapSample(7, 70, 1), std::make_pair(int64_t{7}, int64_t{70}));
  EXPECT_EQ(ScaleHeapSample(0, 0, 512), std::make_pair(int64_t{0}, int64_t{0}));
  // Small objects are scaled up by ~rate/size.
  auto small = ScaleHeapSample(10, 160, 512 * 1024);
  EXPECT_NEAR(small.second, 512 * 1024 * 10, 512 * 10);
}

TEST(GoHeapCycleWordsTest, ByRelease) {
  EXPECT_EQ(GoHeapCycleWords("go1.19.13"), 4);
  EXPECT_EQ(GoHeapCycleWords("go1.26.11"), 4);
  EXPECT_EQ(GoHeapCycleWords("go1.27.4"), 2);
  EXPECT_EQ(GoHeapCycleWords("go1.27rc1"), 2);
  EXPECT_EQ(GoHeapCycleWords("devel go1.28-abcdef Mon Jan 1"), 2);
}

// Go 1.27's records: {allocs, frees} per cycle, bytes = count x size.
TEST(ReadGoHeapTest, TwoWordCyclesOfGo127) {
  FakeMemory m;
  constexpr uint64_t kBucket = 0x200000;
  m.Put64(kRate, 4096);
  m.Put32(kCycle, 4 << 1);  // index 1 + 4 % 3 = 2: future[1]
  m.Put64(kMbuckets, kBucket);
  const uint64_t hdr[6] = {0, 0, 1, 0xabc, 64, 1};
  m.PutBytes(kBucket, hdr, sizeof(hdr));
  m.Put64(kBucket + 48, 0x401000);
  const uint64_t cyc[8] = {10, 4, 1, 0, 2, 1, 3, 0};  // active, future[0..2]
  m.PutBytes(kBucket + 56, cyc, sizeof(cyc));
  GoHeapVars v = Vars();
  v.cycle_words = 2;
  auto snap = ReadGoHeap(m, v);
  ASSERT_TRUE(snap.ok()) << snap.status();
  ASSERT_EQ(snap->records.size(), 1u);
  EXPECT_EQ(snap->records[0].allocs, 12);
  EXPECT_EQ(snap->records[0].frees, 5);
  EXPECT_EQ(snap->records[0].alloc_bytes, 12 * 64);
  EXPECT_EQ(snap->records[0].free_bytes, 5 * 64);
  // Read as the 4-word layout of Go <= 1.26, the same memory is not a heap profile.
  v.cycle_words = 4;
  v.go_version = "go1.26.11";
  for (int i = 8; i < 16; ++i) m.Put64(kBucket + 56 + 8 * i, 0);  // the longer record
  auto wrong = ReadGoHeap(m, v);
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(absl::IsDataLoss(wrong.status())) << wrong.status();
  EXPECT_THAT(std::string(wrong.status().message()), ::testing::HasSubstr("go1.26.11"));
}

// For every Go release of the matrix: the census of the runtime's code finds exactly what the
// symbol table says (plain build, and the PIE build of the production flavor before stripping),
// and the stripped PIE build is located the same way, at the same addresses.
class LocateGoHeapVarsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LocateGoHeapVarsTest, CensusMatchesSymtab) {
  const std::string& v = GetParam();
  const std::string dir = MakeTempDir("go_heap_locate");
  GoHeapVars pie_vars;
  for (const char* flags : {"", "-buildmode=pie -trimpath"}) {
    SCOPED_TRACE(absl::StrCat("go", v, " ", flags));
    const std::string out = absl::StrCat(dir, "/t", flags[0] ? "pie" : "");
    auto built = BuildGo(v, TestDataDir() + "/targets/heap_go_split", flags, out);
    ASSERT_TRUE(built.ok()) << built.status();
    auto elf = ElfFile::Open(out);
    ASSERT_TRUE(elf.ok()) << elf.status();
    auto pcln = GoPclntab::FromElf(**elf);
    ASSERT_TRUE(pcln.ok()) << pcln.status();
    ASSERT_TRUE((*pcln)->module_data().has_value());
    auto sym = LocateGoHeapVarsBySymtab(**elf);
    ASSERT_TRUE(sym.ok()) << sym.status();
    auto code = LocateGoHeapVarsFromCode(**elf, **pcln);
    ASSERT_TRUE(code.ok()) << code.status();
    printf("go%s %s: census (agreeing/anchors present) %s\n", v.c_str(), flags,
           code->census.c_str());
    EXPECT_EQ(code->mbuckets, sym->mbuckets);
    EXPECT_EQ(code->mprof_cycle, sym->mprof_cycle);
    EXPECT_EQ(code->mem_profile_rate, sym->mem_profile_rate);
    EXPECT_EQ(code->method, "code");
    pie_vars = *code;
  }
  SCOPED_TRACE(absl::StrCat("go", v, " stripped PIE"));
  const std::string out = dir + "/stripped";
  auto built = BuildGo(v, TestDataDir() + "/targets/heap_go_split", kGoStrippedPie, out);
  ASSERT_TRUE(built.ok()) << built.status();
  auto elf = ElfFile::Open(out);
  ASSERT_TRUE(elf.ok()) << elf.status();
  EXPECT_FALSE(LocateGoHeapVarsBySymtab(**elf).ok());
  auto pcln = GoPclntab::FromElf(**elf);
  ASSERT_TRUE(pcln.ok()) << pcln.status();
  auto vars = LocateGoHeapVars(**elf, **pcln);
  ASSERT_TRUE(vars.ok()) << vars.status();
  EXPECT_EQ(vars->method, "code");
  EXPECT_EQ(vars->mbuckets, pie_vars.mbuckets);
  EXPECT_EQ(vars->mprof_cycle, pie_vars.mprof_cycle);
  EXPECT_EQ(vars->mem_profile_rate, pie_vars.mem_profile_rate);
  EXPECT_TRUE(absl::StartsWith(vars->go_version, "go" + v)) << vars->go_version;
  EXPECT_EQ(vars->cycle_words, GoHeapCycleWords("go" + v));
}

INSTANTIATE_TEST_SUITE_P(GoVersions, LocateGoHeapVarsTest, ::testing::ValuesIn(GoVersions()),
                         [](const auto& i) { return GoVersionName(i.param); });

}  // namespace
}  // namespace pprof_sidecar
