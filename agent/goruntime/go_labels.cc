#include "agent/goruntime/go_labels.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/go_buildinfo.h"

namespace pprof_sidecar {
namespace {

struct GoString {
  uint64_t ptr = 0, len = 0;
};

absl::StatusOr<std::string> ReadString(MemoryReader& mem, const GoString& s,
                                       const GoLabelLimits& limits) {
  if (s.len > limits.max_string) {
    return absl::DataLossError(absl::StrCat("label string of ", s.len, " bytes"));
  }
  std::string out(s.len, '\0');
  if (s.len > 0) {
    if (absl::Status st = mem.Read(s.ptr, out.data(), out.size()); !st.ok()) return st;
  }
  return out;
}

absl::StatusOr<SampleLabels> ReadPairs(MemoryReader& mem, const std::vector<GoString>& kv,
                                       const GoLabelLimits& limits) {
  SampleLabels out;
  for (size_t i = 0; i + 1 < kv.size(); i += 2) {
    absl::StatusOr<std::string> k = ReadString(mem, kv[i], limits);
    if (!k.ok()) return k.status();
    absl::StatusOr<std::string> v = ReadString(mem, kv[i + 1], limits);
    if (!v.ok()) return v.status();
    out.emplace_back(std::move(*k), std::move(*v));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Go 1.24+: labelMap{LabelSet{list []label}}.
absl::StatusOr<SampleLabels> ReadSliceLabels(MemoryReader& mem, uint64_t ptr,
                                             const GoLabelLimits& limits) {
  uint64_t slice[3];  // data, len, cap
  if (absl::Status st = mem.Read(ptr, slice, sizeof(slice)); !st.ok()) return st;
  if (slice[1] > limits.max_labels || slice[1] > slice[2]) {
    return absl::DataLossError(absl::StrCat("label list of ", slice[1], " (cap ", slice[2], ")"));
  }
  std::vector<GoString> kv(slice[1] * 2);
  if (!kv.empty()) {
    if (absl::Status st = mem.Read(slice[0], kv.data(), kv.size() * sizeof(GoString)); !st.ok()) {
      return st;
    }
  }
  return ReadPairs(mem, kv, limits);
}

// runtime.hmap and the buckets of a map[string]string (runtime/map.go, Go 1.19..1.23).
struct HmapHeader {
  int64_t count;
  uint8_t flags, b;
  uint16_t noverflow;
  uint32_t hash0;
  uint64_t buckets, oldbuckets, nevacuate, extra;
};
static_assert(sizeof(HmapHeader) == 48, "runtime.hmap on amd64");
constexpr int kBucketCnt = 8;
constexpr size_t kBucketBytes = kBucketCnt + 2 * kBucketCnt * sizeof(GoString) + 8;  // 272
constexpr uint8_t kEvacuatedX = 2, kEvacuatedEmpty = 4, kMinTopHash = 5;
constexpr uint8_t kSameSizeGrow = 8;

// Appends the full cells of the bucket chain whose first bucket is `first` (kBucketBytes read
// already) to `kv`; an old bucket already evacuated to the new array adds nothing.
absl::Status ChainCells(MemoryReader& mem, const uint8_t* first, bool old,
                        const GoLabelLimits& limits, std::vector<GoString>* kv) {
  if (old && first[0] >= kEvacuatedX && first[0] <= kEvacuatedEmpty) return absl::OkStatus();
  std::vector<uint8_t> b(first, first + kBucketBytes);
  for (int chain = 0;; ++chain) {
    for (int i = 0; i < kBucketCnt; ++i) {
      if (b[i] < kMinTopHash) continue;
      if (kv->size() >= 2 * limits.max_labels) {
        return absl::DataLossError("more labels than the map's count");
      }
      GoString k, v;
      memcpy(&k, &b[kBucketCnt + i * sizeof(GoString)], sizeof(k));
      memcpy(&v, &b[kBucketCnt + (kBucketCnt + i) * sizeof(GoString)], sizeof(v));
      kv->push_back(k);
      kv->push_back(v);
    }
    uint64_t overflow;
    memcpy(&overflow, &b[kBucketBytes - 8], sizeof(overflow));
    if (overflow == 0) return absl::OkStatus();
    if (chain >= limits.max_overflow) return absl::DataLossError("overflow chain too long");
    if (absl::Status st = mem.Read(overflow, b.data(), b.size()); !st.ok()) return st;
  }
}

// Every chain of the bucket array at `addr` of 2^shift buckets.
absl::Status ArrayCells(MemoryReader& mem, uint64_t addr, int shift, bool old,
                        const GoLabelLimits& limits, std::vector<GoString>* kv) {
  std::vector<uint8_t> arr((size_t{1} << shift) * kBucketBytes);
  if (absl::Status st = mem.Read(addr, arr.data(), arr.size()); !st.ok()) return st;
  for (size_t i = 0; i < (size_t{1} << shift); ++i) {
    if (absl::Status st = ChainCells(mem, &arr[i * kBucketBytes], old, limits, kv); !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<HmapHeader> ReadHmap(MemoryReader& mem, uint64_t ptr, uint64_t* hmap) {
  absl::StatusOr<uint64_t> h = mem.ReadU64(ptr);  // *labelMap: the map variable
  if (!h.ok()) return h.status();
  *hmap = *h;
  HmapHeader hdr{};
  if (*h == 0) return hdr;
  if (absl::Status st = mem.Read(*h, &hdr, sizeof(hdr)); !st.ok()) return st;
  return hdr;
}

// Go 1.19..1.23: *labelMap -> map[string]string.
absl::StatusOr<SampleLabels> ReadMapLabels(MemoryReader& mem, uint64_t ptr,
                                           const GoLabelLimits& limits) {
  uint64_t hmap = 0;
  absl::StatusOr<HmapHeader> h = ReadHmap(mem, ptr, &hmap);
  if (!h.ok()) return h.status();
  if (hmap == 0 || h->count == 0) return SampleLabels();
  if (h->count < 0 || static_cast<uint64_t>(h->count) > limits.max_labels ||
      h->b > limits.max_bucket_shift || h->buckets == 0) {
    return absl::DataLossError(
        absl::StrCat("not a label map: count ", h->count, ", B ", static_cast<int>(h->b)));
  }
  std::vector<GoString> kv;
  if (absl::Status st = ArrayCells(mem, h->buckets, h->b, false, limits, &kv); !st.ok()) return st;
  if (h->oldbuckets != 0) {
    const int old_shift = (h->flags & kSameSizeGrow) || h->b == 0 ? h->b : h->b - 1;
    if (absl::Status st = ArrayCells(mem, h->oldbuckets, old_shift, true, limits, &kv); !st.ok()) {
      return st;
    }
  }
  if (kv.size() != 2 * static_cast<uint64_t>(h->count)) {
    return absl::DataLossError(
        absl::StrCat("label map holds ", kv.size() / 2, " cells, its count says ", h->count));
  }
  return ReadPairs(mem, kv, limits);
}

}  // namespace

absl::StatusOr<SampleLabels> ReadGoLabels(MemoryReader& mem, int minor, uint64_t ptr,
                                          const GoLabelLimits& limits) {
  if (ptr == 0) return SampleLabels();
  if (minor < 19) {
    return absl::UnimplementedError(absl::StrCat("no label layout for go1.", minor));
  }
  return minor >= 24 ? ReadSliceLabels(mem, ptr, limits) : ReadMapLabels(mem, ptr, limits);
}

GoLabelFields GoLabelFieldsOf(const GoLayout& l) {
  GoLabelFields f;
  if (l.g_m != GoLabelFields::kGoGM || l.m_curg <= 0 || l.g_labels <= 0 || l.m_curg > 0xffff ||
      l.g_labels > 0xffff) {
    return f;
  }
  f.m_curg = static_cast<uint16_t>(l.m_curg);
  f.g_labels = static_cast<uint16_t>(l.g_labels);
  return f;
}

GoSampleLabeler::GoSampleLabeler(absl::Duration ttl) : ttl_(ttl) {}

namespace {

// The Go minor release `pid` runs, from its executable's build info (the ELF headers and
// .go.buildinfo are all that is read); nullopt if it is not a Go program or the release is unknown.
std::optional<int> GoMinorOf(uint32_t pid) {
  absl::StatusOr<std::unique_ptr<ElfFile>> elf = ElfFile::Open(absl::StrCat("/proc/", pid, "/exe"));
  if (!elf.ok()) return std::nullopt;
  absl::StatusOr<std::string> version = GoBuildVersion(**elf);
  if (!version.ok()) return std::nullopt;
  std::optional<GoRelease> r = ParseGoRelease(*version);
  if (!r) return std::nullopt;
  return r->minor;
}

}  // namespace

std::optional<GoLabelFields> GoSampleLabeler::Fields(uint32_t pid) {
  {
    std::lock_guard<std::mutex> l(mu_);
    procs_.erase(pid);
  }
  const std::optional<int> minor = GoMinorOf(pid);
  if (!minor) return std::nullopt;
  const GoLayout* layout = GoLayoutFor(*minor);
  if (layout == nullptr) return std::nullopt;
  const GoLabelFields f = GoLabelFieldsOf(*layout);
  if (!f.enabled()) return std::nullopt;
  absl::StatusOr<std::unique_ptr<ProcessMemory>> mem = ProcessMemory::Open(pid);
  if (!mem.ok()) return std::nullopt;
  std::lock_guard<std::mutex> l(mu_);
  if (procs_.size() >= 8) procs_.erase(procs_.begin());
  Proc& p = procs_[pid];
  p.minor = *minor;
  p.mem = std::move(*mem);
  return f;
}

std::shared_ptr<const SampleLabels> GoSampleLabeler::Labels(uint32_t pid, uint64_t ptr) {
  if (ptr == 0) return nullptr;
  std::lock_guard<std::mutex> l(mu_);
  auto pit = procs_.find(pid);
  if (pit == procs_.end()) return nullptr;
  Proc& p = pit->second;
  const absl::Time now = absl::Now();
  auto it = p.sets.find(ptr);
  if (it != p.sets.end() && now - it->second.read < ttl_) {
    ++stats_.hits;
    return it->second.labels;
  }
  absl::StatusOr<SampleLabels> set = ReadGoLabels(*p.mem, p.minor, ptr);
  if (!set.ok()) {
    ++stats_.errors;
    return nullptr;
  }
  ++stats_.reads;
  if (p.sets.size() >= 4096) {
    for (auto e = p.sets.begin(); e != p.sets.end();) {
      e = now - e->second.read >= ttl_ ? p.sets.erase(e) : std::next(e);
    }
    if (p.sets.size() >= 4096) p.sets.clear();
  }
  auto labels = std::make_shared<const SampleLabels>(std::move(*set));
  p.sets[ptr] = Entry{now, labels};
  return labels;
}

GoSampleLabeler::Stats GoSampleLabeler::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

}  // namespace pprof_sidecar
