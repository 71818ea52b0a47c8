// Fuzzes the CFI table reader and evaluator: the input is split into .eh_frame_hdr, .eh_frame
// and .debug_frame bytes, then rows are looked up and evaluated at pcs taken from the input.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "agent/unwind/cfi.h"
#include "agent/unwind/unwinder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pprof_sidecar;
  if (size < 8) return 0;
  uint16_t hdr_len, eh_len;
  memcpy(&hdr_len, data, 2);
  memcpy(&eh_len, data + 2, 2);
  uint32_t base;
  memcpy(&base, data + 4, 4);
  std::string rest(reinterpret_cast<const char*>(data + 8), size - 8);
  hdr_len = static_cast<uint16_t>(std::min<size_t>(hdr_len, rest.size()));
  eh_len = static_cast<uint16_t>(std::min<size_t>(eh_len, rest.size() - hdr_len));
  // Separate heap copies so that ASan catches any read past a section's end.
  std::string hdr = rest.substr(0, hdr_len), eh = rest.substr(hdr_len, eh_len),
              dbg = rest.substr(hdr_len + eh_len);
  CfiSections s;
  s.eh_frame_hdr = hdr;
  s.eh_frame_hdr_vaddr = base;
  s.eh_frame = eh;
  s.eh_frame_vaddr = base + 0x1000;
  s.debug_frame = dbg;
  auto t = CfiTable::FromSections(s);
  if (!t.ok()) return 0;
  std::string stack(256, '\0');
  for (size_t i = 0; i + 4 <= size && i < 64; i += 4) {
    uint32_t pc;
    memcpy(&pc, data + i, 4);
    auto row = (*t)->Find(pc);
    if (!row.ok()) continue;
    uint64_t v;
    auto rd = [&stack](uint64_t a, uint64_t* out) {
      if (a < 0x1000 || a - 0x1000 > stack.size() - 8) return false;
      memcpy(out, stack.data() + (a - 0x1000), 8);
      return true;
    };
    EvalDwarfExpr(row->cfa_expr, pc, 0x1000, 0x1010, false, 0, rd, &v);
    EvalDwarfExpr(row->ra.expr, pc, 0x1000, 0x1010, true, 0x1008, rd, &v);
    EvalDwarfExpr(row->rbp.expr, pc, 0x1000, 0x1010, true, 0x1008, rd, &v);
  }
  return 0;
}
