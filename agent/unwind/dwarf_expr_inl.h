// Implementation of EvalDwarfExpr (see unwinder.h): a bounded DWARF stack machine covering the
// operators that x86-64 CFI uses (PLT CFA expressions, signal frame register rules).
#ifndef PPROF_SIDECAR_AGENT_UNWIND_DWARF_EXPR_INL_H_
#define PPROF_SIDECAR_AGENT_UNWIND_DWARF_EXPR_INL_H_

#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/string_view.h"

namespace pprof_sidecar {

template <typename ReadFn>
bool EvalDwarfExpr(absl::string_view expr, uint64_t rip, uint64_t rsp, uint64_t rbp,
                   bool push_initial, uint64_t initial, ReadFn read, uint64_t* result) {
  constexpr int kMaxStack = 32;
  constexpr int kMaxSteps = 256;
  uint64_t st[kMaxStack];
  int n = 0;
  if (push_initial) st[n++] = initial;
  size_t pos = 0;
  auto u8 = [&](uint8_t* v) {
    if (pos >= expr.size()) return false;
    *v = static_cast<uint8_t>(expr[pos++]);
    return true;
  };
  auto fixed = [&](size_t size, bool is_signed, uint64_t* v) {
    if (expr.size() - pos < size) return false;
    uint64_t x = 0;
    memcpy(&x, expr.data() + pos, size);
    pos += size;
    if (is_signed && size < 8 && (x >> (size * 8 - 1)) & 1) x |= ~uint64_t{0} << (size * 8);
    *v = x;
    return true;
  };
  auto leb = [&](bool is_signed, uint64_t* v) {
    uint64_t x = 0;
    int shift = 0;
    uint8_t b = 0;
    do {
      if (!u8(&b) || shift > 63) return false;
      x |= static_cast<uint64_t>(b & 0x7f) << shift;
      shift += 7;
    } while (b & 0x80);
    if (is_signed && shift < 64 && (b & 0x40)) x |= ~uint64_t{0} << shift;
    *v = x;
    return true;
  };
  for (int steps = 0; pos < expr.size(); ++steps) {
    if (steps > kMaxSteps) return false;
    uint8_t op;
    if (!u8(&op)) return false;
    uint64_t a = 0, b = 0;
    if (op >= 0x30 && op <= 0x4f) {  // lit0..lit31
      if (n >= kMaxStack) return false;
      st[n++] = op - 0x30;
      continue;
    }
    if (op >= 0x70 && op <= 0x8f) {  // breg0..breg31
      uint64_t off;
      if (!leb(true, &off) || n >= kMaxStack) return false;
      const int reg = op - 0x70;
      uint64_t base;
      if (reg == 16) {
        base = rip;
      } else if (reg == 7) {
        base = rsp;
      } else if (reg == 6) {
        base = rbp;
      } else {
        return false;
      }
      st[n++] = base + off;
      continue;
    }
    switch (op) {
      case 0x08:
      case 0x09:
      case 0x0a:
      case 0x0b:
      case 0x0c:
      case 0x0d:
      case 0x0e:
      case 0x0f: {
        static const size_t kSizes[] = {1, 1, 2, 2, 4, 4, 8, 8};
        if (!fixed(kSizes[op - 0x08], (op & 1) != 0, &a) || n >= kMaxStack) return false;
        st[n++] = a;
        break;
      }
      case 0x10:
      case 0x11:  // constu, consts
        if (!leb(op == 0x11, &a) || n >= kMaxStack) return false;
        st[n++] = a;
        break;
      case 0x12:  // dup
        if (n < 1 || n >= kMaxStack) return false;
        st[n] = st[n - 1];
        ++n;
        break;
      case 0x13:  // drop
        if (n < 1) return false;
        --n;
        break;
      case 0x14:  // over
        if (n < 2 || n >= kMaxStack) return false;
        st[n] = st[n - 2];
        ++n;
        break;
      case 0x16:  // swap
        if (n < 2) return false;
        std::swap(st[n - 1], st[n - 2]);
        break;
      case 0x06:  // deref
        if (n < 1 || !read(st[n - 1], &st[n - 1])) return false;
        break;
      case 0x23:  // plus_uconst
        if (n < 1 || !leb(false, &a)) return false;
        st[n - 1] += a;
        break;
      case 0x1f:  // neg
        if (n < 1) return false;
        st[n - 1] = -st[n - 1];
        break;
      case 0x20:  // not
        if (n < 1) return false;
        st[n - 1] = ~st[n - 1];
        break;
      case 0x1a:
      case 0x1c:
      case 0x1e:
      case 0x21:
      case 0x22:
      case 0x24:
      case 0x25:
      case 0x26:
      case 0x27:
      case 0x29:
      case 0x2a:
      case 0x2b:
      case 0x2c:
      case 0x2d:
      case 0x2e: {
        if (n < 2) return false;
        b = st[--n];
        a = st[n - 1];
        const int64_t sa = static_cast<int64_t>(a), sb = static_cast<int64_t>(b);
        uint64_t r = 0;
        switch (op) {
          case 0x1a:
            r = a & b;
            break;
          case 0x1c:
            r = a - b;
            break;
          case 0x1e:
            r = a * b;
            break;
          case 0x21:
            r = a | b;
            break;
          case 0x22:
            r = a + b;
            break;
          case 0x24:
            r = b >= 64 ? 0 : a << b;
            break;
          case 0x25:
            r = b >= 64 ? 0 : a >> b;
            break;
          case 0x26:
            r = b >= 64 ? (sa < 0 ? ~uint64_t{0} : 0) : static_cast<uint64_t>(sa >> b);
            break;
          case 0x27:
            r = a ^ b;
            break;
          case 0x29:
            r = sa == sb;
            break;
          case 0x2a:
            r = sa >= sb;
            break;
          case 0x2b:
            r = sa > sb;
            break;
          case 0x2c:
            r = sa <= sb;
            break;
          case 0x2d:
            r = sa < sb;
            break;
          case 0x2e:
            r = sa != sb;
            break;
        }
        st[n - 1] = r;
        break;
      }
      case 0x96:  // nop
        break;
      default:
        return false;
    }
  }
  if (n < 1) return false;
  *result = st[n - 1];
  return true;
}

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_UNWIND_DWARF_EXPR_INL_H_
