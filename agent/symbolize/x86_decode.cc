// Opcode maps: Intel SDM vol. 2, appendix A. Only lengths and the memory operand are decoded.
#include "agent/symbolize/x86_decode.h"

#include <cstring>

namespace pprof_sidecar {
namespace {

// Immediate kinds.
enum Imm : uint8_t {
  kNone,
  kImm8,
  kImm16,
  kImmZ,    // 16 with an operand-size prefix (and no REX.W), else 32
  kImmV,    // mov r, imm: 64 with REX.W, else as kImmZ
  kImm24,   // enter: imm16 + imm8
  kMoffs,   // mov al/ax, moffs: address-sized
  kGroup3,  // F6/F7: an immediate only for test (reg 0/1)
};

struct Op {
  bool valid = true;
  bool modrm = false;
  Imm imm = kNone;
  bool byte_op = false;  // the memory operand is one byte
};

Op OneByte(uint8_t op) {
  Op o;
  if (op < 0x40) {
    switch (op & 7) {
      case 0: case 1: case 2: case 3:
        o.modrm = true;
        o.byte_op = (op & 1) == 0;
        return o;
      case 4: o.imm = kImm8; return o;
      case 5: o.imm = kImmZ; return o;
      default: o.valid = false; return o;  // 06, 07, 0E, ...: invalid in 64-bit mode
    }
  }
  if (op >= 0x50 && op <= 0x5F) return o;
  if (op >= 0x70 && op <= 0x7F) { o.imm = kImm8; return o; }
  if (op >= 0x84 && op <= 0x8F) {
    o.modrm = true;
    o.byte_op = op == 0x84 || op == 0x86 || op == 0x88 || op == 0x8A;
    return o;
  }
  if (op >= 0x90 && op <= 0x9F) { o.valid = op != 0x9A; return o; }
  if (op >= 0xA0 && op <= 0xA3) { o.imm = kMoffs; return o; }
  if (op >= 0xA4 && op <= 0xAF) {
    o.imm = op == 0xA8 ? kImm8 : op == 0xA9 ? kImmZ : kNone;
    return o;
  }
  if (op >= 0xB0 && op <= 0xB7) { o.imm = kImm8; return o; }
  if (op >= 0xB8 && op <= 0xBF) { o.imm = kImmV; return o; }
  if (op >= 0xD8 && op <= 0xDF) { o.modrm = true; return o; }  // x87
  switch (op) {
    case 0x63: o.modrm = true; return o;
    case 0x68: o.imm = kImmZ; return o;
    case 0x69: o.modrm = true; o.imm = kImmZ; return o;
    case 0x6A: o.imm = kImm8; return o;
    case 0x6B: o.modrm = true; o.imm = kImm8; return o;
    case 0x6C: case 0x6D: case 0x6E: case 0x6F: return o;
    case 0x80: o.modrm = true; o.imm = kImm8; o.byte_op = true; return o;
    case 0x81: o.modrm = true; o.imm = kImmZ; return o;
    case 0x83: o.modrm = true; o.imm = kImm8; return o;
    case 0xC0: o.modrm = true; o.imm = kImm8; o.byte_op = true; return o;
    case 0xC1: o.modrm = true; o.imm = kImm8; return o;
    case 0xC2: o.imm = kImm16; return o;
    case 0xC3: return o;
    case 0xC6: o.modrm = true; o.imm = kImm8; o.byte_op = true; return o;
    case 0xC7: o.modrm = true; o.imm = kImmZ; return o;  // also xbegin rel32
    case 0xC8: o.imm = kImm24; return o;
    case 0xC9: case 0xCB: case 0xCC: case 0xCF: return o;
    case 0xCA: o.imm = kImm16; return o;
    case 0xCD: o.imm = kImm8; return o;
    case 0xD0: case 0xD2: o.modrm = true; o.byte_op = true; return o;
    case 0xD1: case 0xD3: o.modrm = true; return o;
    case 0xD7: return o;
    case 0xE0: case 0xE1: case 0xE2: case 0xE3: case 0xEB: o.imm = kImm8; return o;
    case 0xE4: case 0xE5: case 0xE6: case 0xE7: o.imm = kImm8; return o;
    case 0xE8: case 0xE9: o.imm = kImmZ; return o;  // rel32 (no 16-bit form in 64-bit mode)
    case 0xEC: case 0xED: case 0xEE: case 0xEF: return o;
    case 0xF1: case 0xF4: case 0xF5: return o;
    case 0xF6: o.modrm = true; o.imm = kGroup3; o.byte_op = true; return o;
    case 0xF7: o.modrm = true; o.imm = kGroup3; return o;
    case 0xF8: case 0xF9: case 0xFA: case 0xFB: case 0xFC: case 0xFD: return o;
    case 0xFE: o.modrm = true; o.byte_op = true; return o;
    case 0xFF: o.modrm = true; return o;
    default: o.valid = false; return o;  // 60, 61, 82, 9A, C4/C5/62 (handled apart), D4-D6, EA, CE
  }
}

// Second byte after 0F. `int_width` tells whether the memory operand is an integer of the
// instruction's operand size; `byte_op`/`width2` for movzx/movsx/setcc.
Op TwoByte(uint8_t op, int* fixed_bytes) {
  Op o;
  *fixed_bytes = 0;
  if ((op >= 0x10 && op <= 0x23) || (op >= 0x28 && op <= 0x2F) || (op >= 0x40 && op <= 0x6F) ||
      (op >= 0x74 && op <= 0x76) || (op >= 0x78 && op <= 0x7F) || (op >= 0xD0)) {
    o.modrm = true;
    return o;
  }
  if (op <= 0x03 || op == 0x0D) { o.modrm = true; return o; }
  if (op == 0x0F) { o.modrm = true; o.imm = kImm8; return o; }  // 3DNow!
  if ((op >= 0x05 && op <= 0x09) || op == 0x0B || op == 0x0E || (op >= 0x30 && op <= 0x37) ||
      op == 0x77 || op == 0xA0 || op == 0xA1 || op == 0xA2 || op == 0xA8 || op == 0xA9 ||
      op == 0xAA || (op >= 0xC8 && op <= 0xCF)) {
    return o;
  }
  if (op >= 0x70 && op <= 0x73) { o.modrm = true; o.imm = kImm8; return o; }
  if (op >= 0x80 && op <= 0x8F) { o.imm = kImmZ; return o; }  // jcc rel32
  if (op >= 0x90 && op <= 0x9F) { o.modrm = true; *fixed_bytes = 1; return o; }  // setcc
  switch (op) {
    case 0xA4: case 0xAC: case 0xBA: case 0xC2: case 0xC4: case 0xC5: case 0xC6:
      o.modrm = true; o.imm = kImm8; return o;
    case 0xB6: case 0xBE: o.modrm = true; *fixed_bytes = 1; return o;
    case 0xB7: case 0xBF: o.modrm = true; *fixed_bytes = 2; return o;
    case 0xB0: case 0xC0: o.modrm = true; *fixed_bytes = 1; return o;
    default: break;
  }
  if ((op >= 0xA3 && op <= 0xAF) || (op >= 0xB0 && op <= 0xC7)) { o.modrm = true; return o; }
  o.valid = false;
  return o;
}

// 0F opcodes whose memory operand is an integer of the operand size.
bool TwoByteIntOperand(uint8_t op) {
  return (op >= 0x40 && op <= 0x4F) || op == 0xA3 || op == 0xAB || op == 0xAF || op == 0xB1 ||
         op == 0xB3 || op == 0xBB || op == 0xBC || op == 0xBD || op == 0xB8 || op == 0xC1;
}

bool VexImm8(int map, uint8_t op) {
  return map == 3 || (map == 1 && ((op >= 0x70 && op <= 0x73) || op == 0xC2 || op == 0xC4 ||
                                   op == 0xC5 || op == 0xC6));
}

}  // namespace

std::optional<X86Insn> DecodeX86(absl::string_view code, size_t offset) {
  const auto* p = reinterpret_cast<const uint8_t*>(code.data());
  const size_t n = code.size();
  size_t i = offset;
  bool opsize16 = false, addr32 = false;
  auto have = [&](size_t k) { return i <= n && n - i >= k; };
  for (;; ++i) {
    if (!have(1) || i - offset >= 14) return std::nullopt;
    const uint8_t b = p[i];
    if (b == 0x66) {
      opsize16 = true;
    } else if (b == 0x67) {
      addr32 = true;
    } else if (b != 0xF0 && b != 0xF2 && b != 0xF3 && b != 0x2E && b != 0x3E && b != 0x26 &&
               b != 0x36 && b != 0x64 && b != 0x65) {
      break;
    }
  }
  uint8_t rex = 0;
  if ((p[i] & 0xF0) == 0x40) rex = p[i++];
  const bool w = rex & 8;
  if (!have(1)) return std::nullopt;
  const uint8_t op = p[i++];
  Op o;
  int mem_bytes = -1;  // -1: decide from the operand size below when `int_op`
  bool int_op = false, lea = false;
  uint8_t opcode2 = 0;
  if (op == 0x0F) {
    if (!have(1)) return std::nullopt;
    opcode2 = p[i++];
    if (opcode2 == 0x38 || opcode2 == 0x3A) {
      if (!have(1)) return std::nullopt;
      const uint8_t op3 = p[i++];
      o.modrm = true;
      o.imm = opcode2 == 0x3A ? kImm8 : kNone;
      int_op = opcode2 == 0x38 && (op3 == 0xF0 || op3 == 0xF1);  // movbe
    } else {
      int fixed = 0;
      o = TwoByte(opcode2, &fixed);
      if (fixed) mem_bytes = fixed;
      int_op = TwoByteIntOperand(opcode2);
    }
  } else if (op == 0xC4 || op == 0xC5 || op == 0x62) {
    // VEX (2- or 3-byte) and EVEX prefixes: payload, opcode, ModRM.
    const size_t payload = op == 0xC5 ? 1 : op == 0xC4 ? 2 : 3;
    if (rex || !have(payload + 1)) return std::nullopt;
    const int map = op == 0xC5 ? 1 : op == 0xC4 ? (p[i] & 0x1F) : (p[i] & 0x07);
    i += payload;
    const uint8_t vop = p[i++];
    o.modrm = !(op != 0x62 && map == 1 && vop == 0x77);  // vzeroupper/vzeroall
    o.imm = VexImm8(map, vop) ? kImm8 : kNone;
  } else {
    if ((op & 0xF0) == 0x40) return std::nullopt;  // a second REX
    o = OneByte(op);
    lea = op == 0x8D;
    int_op = o.modrm && !(op >= 0xD8 && op <= 0xDF);
    if (o.byte_op) mem_bytes = 1;
    if (op == 0x63) mem_bytes = 4;
  }
  if (!o.valid) return std::nullopt;

  X86Insn insn;
  int reg = 0;
  if (o.modrm) {
    if (!have(1)) return std::nullopt;
    const uint8_t m = p[i++];
    const int mod = m >> 6, rm = m & 7;
    reg = (m >> 3) & 7;
    size_t disp = 0;
    if (mod != 3) {
      if (rm == 4) {
        if (!have(1)) return std::nullopt;
        if (mod == 0 && (p[i] & 7) == 5) disp = 4;
        ++i;
      } else if (mod == 0 && rm == 5) {
        insn.rip_relative = true;
        disp = 4;
      }
      if (mod == 1) disp = 1;
      if (mod == 2) disp = 4;
    }
    if (!have(disp)) return std::nullopt;
    if (insn.rip_relative) memcpy(&insn.disp, p + i, 4);
    i += disp;
  }
  size_t imm = 0;
  switch (o.imm) {
    case kNone: break;
    case kImm8: imm = 1; break;
    case kImm16: imm = 2; break;
    case kImmZ: imm = opsize16 && !w && op != 0xE8 && op != 0xE9 && op != 0x0F ? 2 : 4; break;
    case kImmV: imm = w ? 8 : opsize16 ? 2 : 4; break;
    case kImm24: imm = 3; break;
    case kMoffs: imm = addr32 ? 4 : 8; break;
    case kGroup3: imm = reg < 2 ? (o.byte_op ? 1 : (opsize16 && !w ? 2 : 4)) : 0; break;
  }
  if (!have(imm)) return std::nullopt;
  i += imm;
  insn.length = i - offset;
  if (lea) {
    insn.mem_bytes = 0;
    insn.is_lea = true;
  } else if (mem_bytes > 0) {
    insn.mem_bytes = mem_bytes;
  } else if (op == 0xFF && (reg == 2 || reg == 4 || reg == 6)) {
    insn.mem_bytes = 8;  // indirect call/jmp, push
  } else if (op == 0x8F) {
    insn.mem_bytes = 8;
  } else if (int_op) {
    insn.mem_bytes = w ? 8 : opsize16 ? 2 : 4;
  }
  return insn;
}

std::vector<RipRef> FindRipReferences(absl::string_view code, uint64_t code_addr,
                                      bool* complete) {
  std::vector<RipRef> out;
  size_t i = 0;
  while (i < code.size()) {
    std::optional<X86Insn> insn = DecodeX86(code, i);
    if (!insn) break;
    if (insn->rip_relative) {
      RipRef r;
      r.target = code_addr + i + insn->length + static_cast<int64_t>(insn->disp);
      r.bytes = insn->mem_bytes;
      r.insn_offset = i;
      out.push_back(r);
    }
    i += insn->length;
  }
  if (complete) *complete = i == code.size();
  return out;
}

}  // namespace pprof_sidecar
