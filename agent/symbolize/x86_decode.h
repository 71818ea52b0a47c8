// A length decoder for x86-64 machine code: instruction boundaries and memory operands, no
// semantics. Enough to walk a Go function from its entry instruction by instruction (Go's text
// holds no data between instructions; functions are padded with int3) and list every RIP-relative
// memory operand, whatever instruction uses it (mov, cmp, test, lock cmpxchg, xchg, lea, ...).
// Covers the one-byte, 0F, 0F38 and 0F3A maps with legacy prefixes and REX, and VEX/EVEX-encoded
// instructions (lengths only). Bytes that do not decode end a walk; they never cause a read past
// the code.
#ifndef PPROF_SIDECAR_AGENT_SYMBOLIZE_X86_DECODE_H_
#define PPROF_SIDECAR_AGENT_SYMBOLIZE_X86_DECODE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/strings/string_view.h"

namespace pprof_sidecar {

struct X86Insn {
  size_t length = 0;
  bool rip_relative = false;  // has a [rip + disp32] memory operand
  int32_t disp = 0;           // its displacement (relative to the end of the instruction)
  // Bytes the memory operand accesses for common integer instructions (1, 2, 4, 8); 0 for LEA
  // (the address is only taken); -1 when not known (SSE/AVX, x87, ...).
  int mem_bytes = -1;
  bool is_lea = false;
};

// Decodes the instruction at `code[offset]`; nullopt if it is truncated or not a valid 64-bit
// mode encoding.
std::optional<X86Insn> DecodeX86(absl::string_view code, size_t offset);

// A RIP-relative memory operand found in code.
struct RipRef {
  uint64_t target = 0;  // address it refers to (code_addr-based)
  int bytes = -1;       // as X86Insn::mem_bytes
  size_t insn_offset = 0;
};

// Every RIP-relative operand in `code` (starting at address `code_addr`), walking instructions
// from its first byte; `complete` (if given) tells whether the walk reached the end of the code.
std::vector<RipRef> FindRipReferences(absl::string_view code, uint64_t code_addr,
                                      bool* complete = nullptr);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_SYMBOLIZE_X86_DECODE_H_
