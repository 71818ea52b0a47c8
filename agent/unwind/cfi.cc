#include "agent/unwind/cfi.h"

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace pprof_sidecar {
namespace {

// DW_EH_PE_* pointer encodings.
constexpr uint8_t kPeOmit = 0xff;
constexpr uint8_t kPeFormatMask = 0x0f;
constexpr uint8_t kPeAppMask = 0x70;
constexpr uint8_t kPeIndirect = 0x80;

// Maximum nesting of DW_CFA_remember_state and instructions evaluated per FDE: hostile CFI must
// not make a lookup expensive.
constexpr int kMaxStateStack = 16;
constexpr int kMaxInstructions = 100000;

absl::Status Corrupt(absl::string_view what, uint64_t off) {
  return absl::DataLossError(absl::StrCat("corrupt CFI: ", what, " at offset ", off));
}

// Bounds-checked little-endian cursor over one section.
class Cursor {
 public:
  Cursor(absl::string_view data, uint64_t pos, uint64_t end)
      : d_(data), pos_(pos), end_(std::min<uint64_t>(end, data.size())) {
    if (pos_ > end_) {
      pos_ = end_;
      ok_ = false;
    }
  }

  uint64_t pos() const { return pos_; }
  uint64_t end() const { return end_; }
  bool ok() const { return ok_; }
  bool AtEnd() const { return pos_ >= end_; }
  void Seek(uint64_t p) {
    if (p > end_) ok_ = false;
    pos_ = std::min(p, end_);
  }

  bool Bytes(void* out, size_t n) {
    if (!ok_ || n > end_ - pos_) return ok_ = false;
    memcpy(out, d_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  uint8_t U8() {
    uint8_t v = 0;
    Bytes(&v, 1);
    return v;
  }
  uint16_t U16() {
    uint16_t v = 0;
    Bytes(&v, 2);
    return v;
  }
  uint32_t U32() {
    uint32_t v = 0;
    Bytes(&v, 4);
    return v;
  }
  uint64_t U64() {
    uint64_t v = 0;
    Bytes(&v, 8);
    return v;
  }
  uint64_t Uleb() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      uint8_t b = U8();
      if (!ok_) return 0;
      if (shift < 64) v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
      if (shift > 70) return ok_ = false;
    }
    return v;
  }
  int64_t Sleb() {
    uint64_t v = 0;
    int shift = 0;
    uint8_t b = 0;
    for (;; shift += 7) {
      b = U8();
      if (!ok_) return 0;
      if (shift < 64) v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
      if (shift > 70) return ok_ = false;
    }
    shift += 7;
    if (shift < 64 && (b & 0x40)) v |= ~uint64_t{0} << shift;
    return static_cast<int64_t>(v);
  }
  absl::string_view Block(uint64_t n) {
    if (!ok_ || n > end_ - pos_) {
      ok_ = false;
      return {};
    }
    absl::string_view b = d_.substr(pos_, n);
    pos_ += n;
    return b;
  }
  void Skip(uint64_t n) { Block(n); }
  // NUL-terminated string.
  absl::string_view CStr() {
    uint64_t start = pos_;
    while (ok_ && pos_ < end_ && d_[pos_] != '\0') ++pos_;
    if (pos_ >= end_) {
      ok_ = false;
      return {};
    }
    ++pos_;
    return d_.substr(start, pos_ - start - 1);
  }

  // Reads a pointer in DW_EH_PE encoding `enc`. `section_vaddr` is the link-time address of the
  // section's first byte (for pcrel); `datarel_base` for datarel. Indirect pointers are not
  // followed (they only appear for personality routines, which unwinding never needs): the
  // returned value is then the address of the pointer.
  uint64_t Pointer(uint8_t enc, uint64_t section_vaddr, uint64_t datarel_base) {
    if (enc == kPeOmit) return 0;
    const uint64_t field_vaddr = section_vaddr + pos_;
    uint64_t v = 0;
    switch (enc & kPeFormatMask) {
      case 0x00:
        v = U64();
        break;
      case 0x01:
        v = Uleb();
        break;
      case 0x02:
        v = U16();
        break;
      case 0x03:
        v = U32();
        break;
      case 0x04:
        v = U64();
        break;
      case 0x09:
        v = static_cast<uint64_t>(Sleb());
        break;
      case 0x0a:
        v = static_cast<uint64_t>(static_cast<int64_t>(static_cast<int16_t>(U16())));
        break;
      case 0x0b:
        v = static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(U32())));
        break;
      case 0x0c:
        v = U64();
        break;
      default:
        ok_ = false;
        return 0;
    }
    switch (enc & kPeAppMask) {
      case 0x00:
        break;
      case 0x10:
        v += field_vaddr;
        break;
      case 0x30:
        v += datarel_base;
        break;
      case 0x20:  // textrel, funcrel, aligned: not used on x86-64 Linux
      case 0x40:
      case 0x50:
      default:
        ok_ = false;
        return 0;
    }
    (void)kPeIndirect;
    return v;
  }

 private:
  absl::string_view d_;
  uint64_t pos_;
  uint64_t end_;
  bool ok_ = true;
};

// Size in bytes of a pointer in encoding `enc` with a fixed-size format, 0 for variable sizes.
size_t FixedPointerSize(uint8_t enc) {
  switch (enc & kPeFormatMask) {
    case 0x00:
    case 0x04:
    case 0x0c:
      return 8;
    case 0x02:
    case 0x0a:
      return 2;
    case 0x03:
    case 0x0b:
      return 4;
    default:
      return 0;
  }
}

struct Cie {
  uint64_t code_align = 1;
  int64_t data_align = 1;
  uint64_t ra_reg = kDwarfRa;
  uint8_t fde_enc = 0;  // DW_EH_PE_absptr
  bool has_z = false;
  bool signal_frame = false;
  uint64_t insns_begin = 0, insns_end = 0;
};

// A length-prefixed entry (CIE or FDE) at `off`: [content_begin, end) and the id field.
struct Entry {
  uint64_t id_pos = 0;  // position of the CIE id / CIE pointer field
  uint64_t body = 0;    // first byte after the id field
  uint64_t end = 0;
  uint64_t id = 0;
  bool is64 = false;
  bool terminator = false;
};

absl::StatusOr<Entry> ReadEntry(absl::string_view sec, uint64_t off) {
  Cursor c(sec, off, sec.size());
  Entry e;
  uint64_t len = c.U32();
  if (!c.ok()) return Corrupt("truncated entry length", off);
  if (len == 0) {
    e.terminator = true;
    e.end = c.pos();
    return e;
  }
  if (len == 0xffffffff) {
    e.is64 = true;
    len = c.U64();
    if (!c.ok()) return Corrupt("truncated 64-bit entry length", off);
  }
  if (len > sec.size() - c.pos()) return Corrupt("entry past end of section", off);
  e.end = c.pos() + len;
  e.id_pos = c.pos();
  Cursor ic(sec, c.pos(), e.end);
  e.id = e.is64 ? ic.U64() : ic.U32();
  if (!ic.ok()) return Corrupt("truncated entry id", off);
  e.body = ic.pos();
  return e;
}

bool IsCie(const Entry& e, bool debug_frame) {
  if (!debug_frame) return e.id == 0;
  return e.is64 ? e.id == ~uint64_t{0} : e.id == 0xffffffff;
}

// Offset of the CIE an FDE refers to.
absl::StatusOr<uint64_t> CieOffset(const Entry& fde, bool debug_frame) {
  if (debug_frame) return fde.id;
  if (fde.id > fde.id_pos) return Corrupt("CIE pointer before section start", fde.id_pos);
  return fde.id_pos - fde.id;
}

absl::StatusOr<Cie> ParseCie(absl::string_view sec, uint64_t section_vaddr, uint64_t off,
                             bool debug_frame) {
  auto e = ReadEntry(sec, off);
  if (!e.ok()) return e.status();
  if (e->terminator || !IsCie(*e, debug_frame)) return Corrupt("FDE points to a non-CIE", off);
  Cursor c(sec, e->body, e->end);
  Cie cie;
  const uint8_t version = c.U8();
  if (version != 1 && version != 3 && version != 4) return Corrupt("unknown CIE version", off);
  absl::string_view aug = c.CStr();
  if (!c.ok()) return Corrupt("bad CIE augmentation", off);
  if (aug.find("eh") != absl::string_view::npos) c.Skip(8);
  if (version == 4) {
    c.U8();  // address_size
    c.U8();  // segment_selector_size
  }
  cie.code_align = c.Uleb();
  cie.data_align = c.Sleb();
  cie.ra_reg = version == 1 ? c.U8() : c.Uleb();
  if (!c.ok()) return Corrupt("truncated CIE", off);
  if (!aug.empty() && aug[0] == 'z') {
    cie.has_z = true;
    const uint64_t aug_len = c.Uleb();
    const uint64_t aug_end = c.pos() + aug_len;
    if (!c.ok() || aug_end > e->end || aug_end < c.pos()) return Corrupt("bad CIE aug data", off);
    for (size_t i = 1; i < aug.size(); ++i) {
      switch (aug[i]) {
        case 'L':
          c.U8();
          break;
        case 'P': {
          uint8_t enc = c.U8();
          c.Pointer(enc & ~kPeIndirect, section_vaddr, 0);
          break;
        }
        case 'R':
          cie.fde_enc = c.U8();
          break;
        case 'S':
          cie.signal_frame = true;
          break;
        default:
          i = aug.size();
          break;  // unknown: the rest is skipped via aug_len
      }
      if (!c.ok()) return Corrupt("bad CIE augmentation data", off);
    }
    c.Seek(aug_end);
  } else if (!aug.empty() && aug != "eh") {
    return Corrupt("unsupported CIE augmentation", off);
  }
  if (!c.ok()) return Corrupt("truncated CIE", off);
  cie.insns_begin = c.pos();
  cie.insns_end = e->end;
  return cie;
}

struct Fde {
  uint64_t begin = 0, end = 0;
  uint64_t insns_begin = 0, insns_end = 0;
};

absl::StatusOr<Fde> ParseFde(absl::string_view sec, uint64_t section_vaddr, const Entry& e,
                             const Cie& cie, bool debug_frame, uint64_t off) {
  Cursor c(sec, e.body, e.end);
  Fde f;
  if (debug_frame) {
    f.begin = c.U64();
    f.end = f.begin + c.U64();
  } else {
    f.begin = c.Pointer(cie.fde_enc, section_vaddr, 0);
    uint64_t range = c.Pointer(cie.fde_enc & kPeFormatMask, 0, 0);
    f.end = f.begin + range;
  }
  if (!c.ok()) return Corrupt("truncated FDE", off);
  if (cie.has_z) {
    uint64_t n = c.Uleb();
    c.Skip(n);
  }
  if (!c.ok()) return Corrupt("truncated FDE augmentation", off);
  f.insns_begin = c.pos();
  f.insns_end = e.end;
  return f;
}

struct RegState {
  CfiRow row;
};

// Runs CFA instructions [begin, end) until the location passes `pc`.
class CfaMachine {
 public:
  CfaMachine(absl::string_view sec, uint64_t section_vaddr, const Cie& cie, uint8_t fde_enc)
      : sec_(sec), vaddr_(section_vaddr), cie_(cie), fde_enc_(fde_enc) {}

  // Returns true when execution stopped because the location advanced past pc.
  absl::StatusOr<bool> Run(uint64_t begin, uint64_t end, uint64_t pc, uint64_t* loc, CfiRow* row,
                           const CfiRow* initial) {
    Cursor c(sec_, begin, end);
    int steps = 0;
    while (!c.AtEnd()) {
      if (++steps > kMaxInstructions) return Corrupt("too many CFA instructions", begin);
      const uint64_t at = c.pos();
      const uint8_t op = c.U8();
      const uint8_t hi = op & 0xc0, low = op & 0x3f;
      uint64_t advance = 0;
      bool advanced = false;
      if (hi == 0x40) {
        advance = low * cie_.code_align;
        advanced = true;
      } else if (hi == 0x80) {
        SetOffset(low, static_cast<int64_t>(c.Uleb()) * cie_.data_align, row);
      } else if (hi == 0xc0) {
        Restore(low, row, initial);
      } else {
        switch (op) {
          case 0x00:
            break;      // nop
          case 0x01: {  // set_loc
            uint64_t nl = c.Pointer(fde_enc_, vaddr_, 0);
            if (c.ok() && nl > pc) return true;
            *loc = nl;
            break;
          }
          case 0x02:
            advance = c.U8() * cie_.code_align;
            advanced = true;
            break;
          case 0x03:
            advance = c.U16() * cie_.code_align;
            advanced = true;
            break;
          case 0x04:
            advance = c.U32() * cie_.code_align;
            advanced = true;
            break;
          case 0x05: {
            uint64_t r = c.Uleb();
            SetOffset(r, static_cast<int64_t>(c.Uleb()) * cie_.data_align, row);
            break;
          }
          case 0x06:
            Restore(c.Uleb(), row, initial);
            break;
          case 0x07:
            SetKind(c.Uleb(), CfiRegRule::kUndefined, row);
            break;
          case 0x08:
            SetKind(c.Uleb(), CfiRegRule::kSameValue, row);
            break;
          case 0x09: {
            uint64_t r = c.Uleb();
            uint64_t r2 = c.Uleb();
            if (CfiRegRule* rule = Rule(r, row)) {
              *rule = CfiRegRule();
              rule->kind = CfiRegRule::kRegister;
              rule->reg = static_cast<uint16_t>(std::min<uint64_t>(r2, 0xffff));
            }
            break;
          }
          case 0x0a:
            if (stack_.size() >= kMaxStateStack) return Corrupt("remember_state too deep", at);
            stack_.push_back(*row);
            break;
          case 0x0b: {
            if (stack_.empty()) return Corrupt("restore_state without remember_state", at);
            // The CFA is part of the saved state too (GCC and LLVM both rely on this).
            *row = stack_.back();
            stack_.pop_back();
            break;
          }
          case 0x0c:
            row->cfa_kind = CfiRow::kCfaRegOffset;
            row->cfa_reg = static_cast<uint16_t>(std::min<uint64_t>(c.Uleb(), 0xffff));
            row->cfa_offset = static_cast<int64_t>(c.Uleb());
            break;
          case 0x0d:
            row->cfa_kind = CfiRow::kCfaRegOffset;
            row->cfa_reg = static_cast<uint16_t>(std::min<uint64_t>(c.Uleb(), 0xffff));
            break;
          case 0x0e:
            row->cfa_offset = static_cast<int64_t>(c.Uleb());
            break;
          case 0x0f:
            row->cfa_kind = CfiRow::kCfaExpression;
            row->cfa_expr = c.Block(c.Uleb());
            break;
          case 0x10:
          case 0x16: {
            uint64_t r = c.Uleb();
            absl::string_view expr = c.Block(c.Uleb());
            if (CfiRegRule* rule = Rule(r, row)) {
              *rule = CfiRegRule();
              rule->kind = op == 0x10 ? CfiRegRule::kExpression : CfiRegRule::kValExpression;
              rule->expr = expr;
            }
            break;
          }
          case 0x11: {
            uint64_t r = c.Uleb();
            SetOffset(r, c.Sleb() * cie_.data_align, row);
            break;
          }
          case 0x12:
            row->cfa_kind = CfiRow::kCfaRegOffset;
            row->cfa_reg = static_cast<uint16_t>(std::min<uint64_t>(c.Uleb(), 0xffff));
            row->cfa_offset = c.Sleb() * cie_.data_align;
            break;
          case 0x13:
            row->cfa_offset = c.Sleb() * cie_.data_align;
            break;
          case 0x14:
          case 0x15: {
            uint64_t r = c.Uleb();
            int64_t off = op == 0x14 ? static_cast<int64_t>(c.Uleb()) * cie_.data_align
                                     : c.Sleb() * cie_.data_align;
            if (CfiRegRule* rule = Rule(r, row)) {
              *rule = CfiRegRule();
              rule->kind = CfiRegRule::kValOffset;
              rule->offset = off;
            }
            break;
          }
          case 0x2e:
            c.Uleb();
            break;      // GNU_args_size
          case 0x2f: {  // GNU_negative_offset_extended
            uint64_t r = c.Uleb();
            SetOffset(r, -static_cast<int64_t>(c.Uleb()) * cie_.data_align, row);
            break;
          }
          default:
            return Corrupt("unknown CFA instruction", at);
        }
      }
      if (!c.ok()) return Corrupt("truncated CFA instruction", at);
      if (advanced) {
        if (*loc + advance > pc) return true;
        *loc += advance;
      }
    }
    return false;
  }

 private:
  CfiRegRule* Rule(uint64_t reg, CfiRow* row) {
    if (reg == cie_.ra_reg) return &row->ra;
    if (reg == kDwarfRbp) return &row->rbp;
    return nullptr;
  }
  void SetOffset(uint64_t reg, int64_t off, CfiRow* row) {
    if (CfiRegRule* r = Rule(reg, row)) {
      *r = CfiRegRule();
      r->kind = CfiRegRule::kOffset;
      r->offset = off;
    }
  }
  void SetKind(uint64_t reg, CfiRegRule::Kind k, CfiRow* row) {
    if (CfiRegRule* r = Rule(reg, row)) {
      *r = CfiRegRule();
      r->kind = k;
    }
  }
  void Restore(uint64_t reg, CfiRow* row, const CfiRow* initial) {
    CfiRegRule* r = Rule(reg, row);
    if (r == nullptr) return;
    if (initial == nullptr) {
      *r = CfiRegRule();
    } else {
      *r = reg == cie_.ra_reg ? initial->ra : initial->rbp;
    }
  }

  absl::string_view sec_;
  uint64_t vaddr_;
  const Cie& cie_;
  uint8_t fde_enc_;
  std::vector<CfiRow> stack_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CfiTable>> CfiTable::FromElf(const ElfFile& elf,
                                                            bool use_debug_frame) {
  CfiSections s;
  if (const ElfSection* sec = elf.FindSection(".eh_frame")) {
    s.eh_frame = elf.SectionData(*sec);
    s.eh_frame_vaddr = sec->addr;
  }
  if (const ElfSection* sec = elf.FindSection(".eh_frame_hdr")) {
    s.eh_frame_hdr = elf.SectionData(*sec);
    s.eh_frame_hdr_vaddr = sec->addr;
  }
  const ElfSection* dbg = use_debug_frame ? elf.FindSection(".debug_frame") : nullptr;
  if (const ElfSection* sec = dbg) {
    s.debug_frame = elf.SectionData(*sec);
  }
  return FromSections(s);
}

absl::StatusOr<std::unique_ptr<CfiTable>> CfiTable::FromSections(const CfiSections& sections) {
  if (sections.eh_frame.empty() && sections.debug_frame.empty()) {
    return absl::NotFoundError("no .eh_frame or .debug_frame");
  }
  std::unique_ptr<CfiTable> t(new CfiTable());
  t->s_ = sections;
  // .eh_frame_hdr: version 1, sorted table in the standard datarel|sdata4 encoding.
  const absl::string_view hdr = sections.eh_frame_hdr;
  bool hdr_ok = false;
  if (hdr.size() >= 4 && !sections.eh_frame.empty() && hdr[0] == 1 &&
      static_cast<uint8_t>(hdr[3]) == 0x3b) {
    Cursor c(hdr, 4, hdr.size());
    c.Pointer(static_cast<uint8_t>(hdr[1]), sections.eh_frame_hdr_vaddr, 0);
    uint64_t count = c.Pointer(static_cast<uint8_t>(hdr[2]), sections.eh_frame_hdr_vaddr,
                               sections.eh_frame_hdr_vaddr);
    if (c.ok() && count > 0 && count <= (hdr.size() - c.pos()) / 8) {
      t->hdr_table_ = hdr.substr(c.pos(), count * 8);
      t->hdr_count_ = count;
      t->num_fdes_ += count;
      hdr_ok = true;
    }
  }
  (void)FixedPointerSize;
  if (!hdr_ok && !sections.eh_frame.empty()) {
    absl::Status st = t->BuildIndex(false);
    if (!st.ok() && sections.debug_frame.empty()) return st;
  }
  if (!sections.debug_frame.empty()) {
    absl::Status st = t->BuildIndex(true);
    if (!st.ok() && t->num_fdes_ == 0) return st;
  }
  std::sort(t->index_.begin(), t->index_.end(),
            [](const IndexEntry& a, const IndexEntry& b) { return a.begin < b.begin; });
  t->num_fdes_ += t->index_.size();
  return t;
}

absl::Status CfiTable::BuildIndex(bool debug_frame) {
  const absl::string_view sec = debug_frame ? s_.debug_frame : s_.eh_frame;
  const uint64_t vaddr = debug_frame ? 0 : s_.eh_frame_vaddr;
  uint64_t off = 0;
  // CIE parse results are reused across the FDEs that share them (nearly all do).
  uint64_t last_cie_off = ~uint64_t{0};
  Cie last_cie;
  while (off < sec.size()) {
    auto e = ReadEntry(sec, off);
    if (!e.ok()) return e.status();
    if (e->terminator) {
      if (!debug_frame) break;
      off = e->end;
      continue;
    }
    if (!IsCie(*e, debug_frame)) {
      auto cie_off = CieOffset(*e, debug_frame);
      if (cie_off.ok() && off <= 0xffffffffu) {
        if (*cie_off != last_cie_off) {
          auto cie = ParseCie(sec, vaddr, *cie_off, debug_frame);
          if (cie.ok()) {
            last_cie = *cie;
            last_cie_off = *cie_off;
          }
        }
        if (*cie_off == last_cie_off) {
          auto fde = ParseFde(sec, vaddr, *e, last_cie, debug_frame, off);
          if (fde.ok() && fde->end > fde->begin) {
            index_.push_back(
                IndexEntry{fde->begin, fde->end, static_cast<uint32_t>(off), debug_frame});
          }
        }
      }
    }
    off = e->end;
  }
  return absl::OkStatus();
}

absl::StatusOr<CfiRow> CfiTable::EvalFde(bool debug_frame, uint64_t fde_off, uint64_t pc) const {
  const absl::string_view sec = debug_frame ? s_.debug_frame : s_.eh_frame;
  const uint64_t vaddr = debug_frame ? 0 : s_.eh_frame_vaddr;
  auto e = ReadEntry(sec, fde_off);
  if (!e.ok()) return e.status();
  if (e->terminator || IsCie(*e, debug_frame)) return Corrupt("not an FDE", fde_off);
  auto cie_off = CieOffset(*e, debug_frame);
  if (!cie_off.ok()) return cie_off.status();
  auto cie = ParseCie(sec, vaddr, *cie_off, debug_frame);
  if (!cie.ok()) return cie.status();
  auto fde = ParseFde(sec, vaddr, *e, *cie, debug_frame, fde_off);
  if (!fde.ok()) return fde.status();
  if (pc < fde->begin || pc >= fde->end) {
    return absl::NotFoundError(absl::StrCat("no FDE covers 0x", absl::Hex(pc)));
  }
  CfiRow row;
  row.signal_frame = cie->signal_frame;
  row.fde_begin = fde->begin;
  row.fde_end = fde->end;
  // Initial instructions of the CIE; their location never advances in practice.
  uint64_t loc = fde->begin;
  CfaMachine m(sec, vaddr, *cie, debug_frame ? 0x00 : cie->fde_enc);
  auto r = m.Run(cie->insns_begin, cie->insns_end, ~uint64_t{0}, &loc, &row, nullptr);
  if (!r.ok()) return r.status();
  const CfiRow initial = row;
  loc = fde->begin;
  r = m.Run(fde->insns_begin, fde->insns_end, pc, &loc, &row, &initial);
  if (!r.ok()) return r.status();
  return row;
}

absl::StatusOr<CfiRow> CfiTable::Find(uint64_t pc) const {
  absl::Status last = absl::NotFoundError(absl::StrCat("no FDE covers 0x", absl::Hex(pc)));
  if (hdr_count_ > 0) {
    // Last entry whose initial location is <= pc.
    const int64_t hdr_vaddr = static_cast<int64_t>(s_.eh_frame_hdr_vaddr);
    auto loc_at = [&](size_t i) {
      int32_t v;
      memcpy(&v, hdr_table_.data() + i * 8, 4);
      return static_cast<uint64_t>(hdr_vaddr + v);
    };
    size_t lo = 0, hi = hdr_count_;
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (loc_at(mid) <= pc) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    if (lo > 0) {
      int32_t fde_rel;
      memcpy(&fde_rel, hdr_table_.data() + (lo - 1) * 8 + 4, 4);
      const uint64_t fde_vaddr = static_cast<uint64_t>(hdr_vaddr + fde_rel);
      if (fde_vaddr >= s_.eh_frame_vaddr && fde_vaddr - s_.eh_frame_vaddr < s_.eh_frame.size()) {
        auto row = EvalFde(false, fde_vaddr - s_.eh_frame_vaddr, pc);
        if (row.ok() || !absl::IsNotFound(row.status())) return row;
      } else {
        last = Corrupt(".eh_frame_hdr entry outside .eh_frame", (lo - 1) * 8);
      }
    }
  }
  auto it = std::upper_bound(index_.begin(), index_.end(), pc,
                             [](uint64_t v, const IndexEntry& e) { return v < e.begin; });
  // FDEs may nest or overlap (rare); look back over a few candidates.
  for (int n = 0; it != index_.begin() && n < 4; ++n) {
    --it;
    if (pc >= it->begin && pc < it->end) return EvalFde(it->debug_frame, it->offset, pc);
  }
  return last;
}

}  // namespace pprof_sidecar
