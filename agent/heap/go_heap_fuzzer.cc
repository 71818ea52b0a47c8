// Fuzzes the parts of agent/heap that consume untrusted bytes: the Go heap bucket-list walker
// (the target's memory is the fuzzer input, mapped at a fixed base) and the x86-64 decoder.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/heap/go_heap.h"
#include "agent/symbolize/x86_decode.h"

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
  for (int words : {4, 2}) {  // Go <= 1.26 and Go 1.27+ records
    vars.cycle_words = words;
    auto snap = pprof_sidecar::ReadGoHeap(mem, vars, limits);
    if (snap.ok()) pprof_sidecar::SubtractHeap(*snap, *snap);
  }

  // The x86-64 decoder the runtime-variable census walks functions with.
  absl::string_view code(reinterpret_cast<const char*>(data), size);
  bool complete = false;
  pprof_sidecar::FindRipReferences(code, 0x401000, &complete);
  for (size_t i = 0; i < size && i < 64; ++i) pprof_sidecar::DecodeX86(code, i);
  return 0;
}
