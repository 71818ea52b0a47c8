// ReadGoLabels on label sets laid out as the Go runtime lays them out (the real layouts are
// checked against real targets by goroutine_profile_test and labels_e2e_bpf_test): the 1.24+
// slice, the 1.19..1.23 map with overflow buckets and a grow left unfinished, and forged maps.
#include "agent/goruntime/go_labels.h"

#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace pprof_sidecar {
namespace {

class FakeMemory : public MemoryReader {
 public:
  void Put64(uint64_t addr, uint64_t v) { PutBytes(addr, &v, 8); }
  void PutBytes(uint64_t addr, const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) bytes_[addr + i] = static_cast<const char*>(p)[i];
  }
  // A string's bytes at a fresh address; returns (ptr, len).
  std::pair<uint64_t, uint64_t> String(const std::string& s) {
    const uint64_t p = next_str_;
    PutBytes(p, s.data(), s.size());
    next_str_ += s.size() + 16;
    return {p, s.size()};
  }
  absl::Status Read(uint64_t addr, void* buf, size_t len) override {
    for (size_t i = 0; i < len; ++i) {
      auto it = bytes_.find(addr + i);
      if (it == bytes_.end()) {
        return absl::DataLossError(absl::StrCat("unmapped 0x", absl::Hex(addr + i)));
      }
      static_cast<char*>(buf)[i] = it->second;
    }
    return absl::OkStatus();
  }

 private:
  std::map<uint64_t, char> bytes_;
  uint64_t next_str_ = 0x900000;
};

constexpr size_t kBucket = 272;  // bmap of map[string]string

// Writes one bucket at `addr`: cells (tophash, key, value), then the overflow pointer.
void PutBucket(FakeMemory& m, uint64_t addr,
               const std::vector<std::tuple<uint8_t, std::string, std::string>>& cells,
               uint64_t overflow = 0) {
  std::vector<uint8_t> zero(kBucket, 0);
  m.PutBytes(addr, zero.data(), zero.size());
  for (size_t i = 0; i < cells.size(); ++i) {
    const auto& [top, k, v] = cells[i];
    m.PutBytes(addr + i, &top, 1);
    auto ks = m.String(k), vs = m.String(v);
    m.Put64(addr + 8 + 16 * i, ks.first);
    m.Put64(addr + 8 + 16 * i + 8, ks.second);
    m.Put64(addr + 8 + 128 + 16 * i, vs.first);
    m.Put64(addr + 8 + 128 + 16 * i + 8, vs.second);
  }
  m.Put64(addr + kBucket - 8, overflow);
}

// g.labels -> map variable -> hmap at kHmap.
constexpr uint64_t kLabels = 0x1000, kHmap = 0x2000, kBuckets = 0x10000, kOld = 0x20000,
                   kOverflow = 0x30000;

void PutHmap(FakeMemory& m, int64_t count, uint8_t flags, uint8_t b, uint64_t buckets,
             uint64_t oldbuckets) {
  m.Put64(kLabels, kHmap);
  uint8_t hdr[48] = {};
  memcpy(hdr, &count, 8);
  hdr[8] = flags;
  hdr[9] = b;
  memcpy(hdr + 16, &buckets, 8);
  memcpy(hdr + 24, &oldbuckets, 8);
  m.PutBytes(kHmap, hdr, sizeof(hdr));
}

TEST(GoLabelsTest, SliceOfGo124IsReadSorted) {
  FakeMemory m;
  auto k1 = m.String("worker"), v1 = m.String("b"), k2 = m.String("job"), v2 = m.String("burn");
  const uint64_t list = 0x5000;
  for (const auto& [i, s] : std::vector<std::pair<int, std::pair<uint64_t, uint64_t>>>{
           {0, k1}, {1, v1}, {2, k2}, {3, v2}}) {
    m.Put64(list + 16 * i, s.first);
    m.Put64(list + 16 * i + 8, s.second);
  }
  m.Put64(kLabels, list);
  m.Put64(kLabels + 8, 2);
  m.Put64(kLabels + 16, 2);
  auto l = ReadGoLabels(m, 24, kLabels);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(*l, (SampleLabels{{"job", "burn"}, {"worker", "b"}}));
  m.Put64(kLabels + 8, 3);  // len > cap
  EXPECT_FALSE(ReadGoLabels(m, 27, kLabels).ok());
  EXPECT_TRUE(ReadGoLabels(m, 24, 0)->empty());
}

TEST(GoLabelsTest, MapWithOverflowAndUnfinishedGrow) {
  FakeMemory m;
  // A grow from 1 bucket to 2: the old bucket still holds two entries; the new buckets hold one
  // each, the second through an overflow bucket. Empty cells (tophash < 5) are skipped.
  PutBucket(m, kOld, {{7, "a", "1"}, {1, "junk", "x"}, {9, "b", "2"}});
  PutBucket(m, kBuckets, {{5, "c", "3"}});
  PutBucket(m, kBuckets + kBucket, {{0, "", ""}}, kOverflow);
  PutBucket(m, kOverflow, {{200, "d", "4"}});
  PutHmap(m, 4, 0, 1, kBuckets, kOld);
  auto l = ReadGoLabels(m, 19, kLabels);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(*l, (SampleLabels{{"a", "1"}, {"b", "2"}, {"c", "3"}, {"d", "4"}}));
}

TEST(GoLabelsTest, EvacuatedOldBucketsAreSkipped) {
  FakeMemory m;
  // A same-size grow (flag 8): old bucket 0 was evacuated (its cells marked 2..4, its entries
  // now in the new array), old bucket 1 was not.
  PutBucket(m, kOld, {{2, "a", "stale"}, {3, "b", "stale"}});
  PutBucket(m, kOld + kBucket, {{6, "c", "3"}});
  PutBucket(m, kBuckets, {{5, "a", "1"}, {8, "b", "2"}});
  PutBucket(m, kBuckets + kBucket, {});
  PutHmap(m, 3, 8, 1, kBuckets, kOld);
  auto l = ReadGoLabels(m, 23, kLabels);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(*l, (SampleLabels{{"a", "1"}, {"b", "2"}, {"c", "3"}}));
}

TEST(GoLabelsTest, ForgedMapsAreErrorsNotWork) {
  FakeMemory m;
  PutBucket(m, kBuckets, {{5, "a", "1"}});
  PutHmap(m, 2, 0, 0, kBuckets, 0);  // count says 2, one cell
  EXPECT_FALSE(ReadGoLabels(m, 21, kLabels).ok());
  PutHmap(m, 1, 0, 40, kBuckets, 0);  // 2^40 buckets
  EXPECT_FALSE(ReadGoLabels(m, 21, kLabels).ok());
  PutBucket(m, kBuckets, {{5, "a", "1"}}, kBuckets);  // an overflow chain looping on itself
  PutHmap(m, 1, 0, 0, kBuckets, 0);
  EXPECT_FALSE(ReadGoLabels(m, 21, kLabels).ok());
  PutBucket(m, kBuckets, {{5, "a", "1"}});
  EXPECT_EQ(*ReadGoLabels(m, 21, kLabels), (SampleLabels{{"a", "1"}}));
  PutHmap(m, 0, 0, 0, 0, 0);  // an empty map
  EXPECT_TRUE(ReadGoLabels(m, 21, kLabels)->empty());
  m.Put64(kLabels, 0);  // a nil map
  EXPECT_TRUE(ReadGoLabels(m, 21, kLabels)->empty());
  EXPECT_FALSE(ReadGoLabels(m, 18, kLabels).ok());
}

TEST(GoLabelsTest, FieldsForEveryKnownRelease) {
  for (int minor = 19; minor <= 27; ++minor) {
    const GoLayout* l = GoLayoutFor(minor);
    ASSERT_NE(l, nullptr) << minor;
    const GoLabelFields f = GoLabelFieldsOf(*l);
    EXPECT_TRUE(f.enabled()) << minor;
    EXPECT_EQ(f.m_curg, l->m_curg);
    EXPECT_EQ(f.g_labels, l->g_labels);
  }
  GoLayout odd = *GoLayoutFor(27);
  odd.g_m = 56;  // the program reads g.m at 48 only
  EXPECT_FALSE(GoLabelFieldsOf(odd).enabled());
}

}  // namespace
}  // namespace pprof_sidecar
