// Fuzzes the parts of agent/heap that consume untrusted bytes: the Go heap bucket-list walker
// (the target's memory is the fuzzer input, mapped at a fixed base) and the machine-code scanner.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/heap/go_heap.h"

namespace {

constexpr uint64_t kBase = 0x10000;

class BlobMemory : public pprof_sidecar::MemoryReader {
 public:
  BlobMemory(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  absl::Status Read(uint64_t addr, void* buf, size_t len) override {
    if (addr < kBase || addr - kBase > size_ || size_ - (addr - kBase) < len) {
      return absl::DataLossError(absl::StrCat("unmapped 0x", absl::Hex(addr)));
    }
    memcpy(buf, data_ + (addr - kBase), len);
    return absl::OkStatus();
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  BlobMemory mem(data, size);
  pprof_sidecar::GoHeapVars vars;
  vars.mem_profile_rate = kBase;
  vars.mprof_cycle = kBase + 8;
  vars.mbuckets = kBase + 16;
  pprof_sidecar::GoHeapReadLimits limits;
  limits.max_buckets = 4096;
  auto snap = pprof_sidecar::ReadGoHeap(mem, vars, limits);
  if (snap.ok()) pprof_sidecar::SubtractGoHeap(*snap, *snap);

  absl::string_view code(reinterpret_cast<const char*>(data), size);
  for (bool wide : {true, false}) {
    for (const auto& l : pprof_sidecar::FindRipRelativeLoads(code, 0x401000, wide)) {
      pprof_sidecar::IsCmpImm8At(code, l.end, l.reg, 1);
    }
  }
  for (size_t i = 0; i < size && i < 64; ++i) pprof_sidecar::IsCmpImm8At(code, i, 0, 1);
  return 0;
}
