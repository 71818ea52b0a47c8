// Go pclntab reader. Layout facts (Go 1.18-1.27, see runtime/symtab.go and runtime2.go):
//
//   pcHeader: magic u32, pad1 u8, pad2 u8, minLC u8, ptrSize u8, nfunc, nfiles, textStart,
//             funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset (all ptr-sized;
//             offsets are relative to the header).
//   functab (at pclnOffset): nfunc+1 pairs {entryoff u32, funcoff u32}; funcoff is relative to
//             pclnOffset; the last entryoff is the end of the text.
//   _func:    entryoff, nameoff, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset,
//             [startLine (1.20+)], funcID u8, flag u8, pad u8, nfuncdata u8, then
//             pcdata[npcdata] u32 (offsets into pctab) and funcdata[nfuncdata] u32 (offsets from
//             moduledata.gofunc, ^0 = none).
//   inlinedCall (FUNCDATA_InlTree, indexed by PCDATA_InlTreeIndex):
//             1.18/1.19: parent i16, funcID u8, pad, file i32, line i32, nameoff i32, parentPc i32
//             1.20+:     funcID u8, pad[3], nameoff i32, parentPc i32, startLine i32
//   moduledata: pcHeader, funcnametab, cutab, filetab, pctab, pclntable, ftab (slices),
//             findfunctab, minpc, maxpc, text, etext, noptrdata, enoptrdata, data, edata, bss,
//             ebss, noptrbss, enoptrbss (words 19-31 in every release), then fields that moved.
#include "agent/symbolize/go_pclntab.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pprof_sidecar {
namespace {

constexpr uint32_t kMagic118 = 0xfffffff0;
constexpr uint32_t kMagic120 = 0xfffffff1;
constexpr size_t kHeaderSize = 8 + 8 * 8;
constexpr int kPcdataInlTreeIndex = 2;
constexpr int kFuncdataInlTree = 3;
constexpr uint32_t kNoFuncdata = 0xffffffff;
// Bounds recursion through corrupt inline trees (real nesting is far below this).
constexpr int kMaxInlineDepth = 256;

// Bounds-checked little-endian reads from a byte view.
class Bytes {
 public:
  Bytes() = default;
  explicit Bytes(absl::string_view d) : d_(d) {}
  size_t size() const { return d_.size(); }
  absl::string_view view() const { return d_; }
  bool U8(uint64_t off, uint8_t* v) const {
    if (off >= d_.size()) return false;
    *v = static_cast<uint8_t>(d_[off]);
    return true;
  }
  bool U32(uint64_t off, uint32_t* v) const {
    if (off > d_.size() || d_.size() - off < 4) return false;
    uint32_t x = 0;
    for (int i = 3; i >= 0; --i) x = (x << 8) | static_cast<uint8_t>(d_[off + i]);
    *v = x;
    return true;
  }
  bool U64(uint64_t off, uint64_t* v) const {
    if (off > d_.size() || d_.size() - off < 8) return false;
    uint64_t x = 0;
    for (int i = 7; i >= 0; --i) x = (x << 8) | static_cast<uint8_t>(d_[off + i]);
    *v = x;
    return true;
  }
  bool I32(uint64_t off, int32_t* v) const {
    uint32_t u;
    if (!U32(off, &u)) return false;
    *v = static_cast<int32_t>(u);
    return true;
  }
  // NUL-terminated string at off (must be terminated inside the view).
  bool CString(uint64_t off, absl::string_view* s) const {
    if (off >= d_.size()) return false;
    const char* p = d_.data() + off;
    const void* nul = memchr(p, 0, d_.size() - off);
    if (nul == nullptr) return false;
    *s = absl::string_view(p, static_cast<const char*>(nul) - p);
    return true;
  }

 private:
  absl::string_view d_;
};

// Go's runtime.funcNameForPrint: the type arguments of a generic name become "[...]".
std::string NameForPrint(absl::string_view name) {
  size_t i = name.find('[');
  if (i == absl::string_view::npos) return std::string(name);
  size_t j = name.rfind(']');
  if (j == absl::string_view::npos || j <= i) return std::string(name);
  return absl::StrCat(name.substr(0, i), "[...]", name.substr(j + 1));
}

struct Header {
  bool go120 = false;
  uint8_t min_lc = 1;
  uint64_t nfunc = 0;
  uint64_t nfiles = 0;
  uint64_t text_start = 0;
  uint64_t funcname_off = 0;
  uint64_t cu_off = 0;
  uint64_t filetab_off = 0;
  uint64_t pctab_off = 0;
  uint64_t pcln_off = 0;
};

// Validates a pcHeader at the start of `t`. Checks everything FromBytes relies on for bounds.
absl::StatusOr<Header> ParseHeader(const Bytes& t) {
  uint32_t magic;
  uint8_t pad1, pad2, min_lc, ptr_size;
  if (!t.U32(0, &magic) || !t.U8(4, &pad1) || !t.U8(5, &pad2) || !t.U8(6, &min_lc) ||
      !t.U8(7, &ptr_size) || t.size() < kHeaderSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("pclntab: truncated header (", t.size(), " bytes)"));
  }
  Header h;
  if (magic == kMagic118) {
    h.go120 = false;
  } else if (magic == kMagic120) {
    h.go120 = true;
  } else {
    return absl::InvalidArgumentError(absl::StrFormat("pclntab: unsupported magic %#x", magic));
  }
  if (pad1 != 0 || pad2 != 0 || ptr_size != 8 || (min_lc != 1 && min_lc != 2 && min_lc != 4)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "pclntab: bad header (pad %d %d, minLC %d, ptrSize %d)", pad1, pad2, min_lc, ptr_size));
  }
  h.min_lc = min_lc;
  uint64_t* fields[] = {&h.nfunc,  &h.nfiles,      &h.text_start, &h.funcname_off,
                        &h.cu_off, &h.filetab_off, &h.pctab_off,  &h.pcln_off};
  for (int i = 0; i < 8; ++i) t.U64(8 + 8 * i, fields[i]);
  const uint64_t size = t.size();
  for (uint64_t off : {h.funcname_off, h.cu_off, h.filetab_off, h.pctab_off, h.pcln_off}) {
    if (off < kHeaderSize || off > size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("pclntab: header offset %#x outside table of %d bytes", off, size));
    }
  }
  if (h.nfunc == 0 || h.nfunc > (size - h.pcln_off) / 8 || (h.nfunc + 1) * 8 > size - h.pcln_off) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "pclntab: function table of %d entries does not fit in %d bytes", h.nfunc, size));
  }
  return h;
}

class GoPclntabImpl : public GoPclntab {
 public:
  GoPclntabImpl(std::string owned, absl::string_view table, const Header& h, uint64_t text_start)
      : owned_(std::move(owned)),
        t_(owned_.empty() ? table : absl::string_view(owned_)),
        h_(h),
        text_start_(text_start) {
    wrapper_func_id_ = FindWrapperFuncId();
  }

  void SetGofunc(absl::string_view gofunc) {
    gofunc_ = Bytes(gofunc);
    have_gofunc_ = true;
  }
  void SetModuleData(const ModuleData& md) { md_ = md; }
  // Inline-tree records at `gofunc` checked for a sample of the functions that have one: the
  // number that are well-formed, or -1 if any is not (the candidate is not gofunc).
  int GofuncScore(absl::string_view gofunc) const;
  uint64_t EntryAt(uint64_t i) const { return text_start_ + EntryOff(i); }

  absl::StatusOr<SourceLines> Symbolize(uint64_t pc) const override {
    return SymbolizeLevels(pc, nullptr);
  }
  absl::StatusOr<SourceLines> SymbolizeLevels(uint64_t pc,
                                              std::vector<uint64_t>* level_pcs) const override;
  absl::StatusOr<FuncInfo> LookupFunc(uint64_t pc) const override;
  absl::string_view FuncData(uint64_t pc, int index) const override {
    absl::StatusOr<Func> f = FindFunc(pc);
    uint32_t off;
    if (!f.ok() || !have_gofunc_ || index < 0 || index >= f->nfuncdata ||
        !t_.U32(f->pcdata_base + 4 * (static_cast<uint64_t>(f->npcdata) + index), &off) ||
        off == kNoFuncdata || off >= gofunc_.view().size()) {
      return {};
    }
    return gofunc_.view().substr(off);
  }
  int32_t PcDataAt(uint64_t pc, int table) const override {
    absl::StatusOr<Func> f = FindFunc(pc);
    return f.ok() ? PcData(*f, table, pc) : -1;
  }
  const std::optional<ModuleData>& module_data() const override { return md_; }
  int wrapper_func_id() const override { return wrapper_func_id_; }
  std::string version_family() const override { return h_.go120 ? "1.20+" : "1.18-1.19"; }
  size_t num_funcs() const override { return h_.nfunc; }
  uint64_t min_pc() const override { return text_start_ + EntryOff(0); }
  uint64_t max_pc() const override { return text_start_ + EntryOff(h_.nfunc); }

 private:
  struct Func {
    uint64_t off = 0;  // of the _func in the table
    uint64_t entry = 0;
    uint64_t end = 0;
    int32_t nameoff = 0;
    uint32_t pcsp = 0, pcfile = 0, pcln = 0, npcdata = 0, cu_offset = 0;
    int32_t start_line = 0;
    uint8_t func_id = 0;
    uint8_t flag = 0;
    uint8_t nfuncdata = 0;
    uint64_t pcdata_base = 0;  // table offset of pcdata[0]
  };

  uint32_t EntryOff(uint64_t i) const {
    uint32_t v = 0;
    t_.U32(h_.pcln_off + 8 * i, &v);
    return v;
  }
  absl::StatusOr<Func> FindFunc(uint64_t pc) const;
  // The function at index i of the function table.
  absl::StatusOr<Func> FuncAt(uint64_t i) const;
  // Go's pcvalue: value of the table at pctab+off for targetpc, -1 when absent/ended.
  int32_t PcValue(uint32_t off, uint64_t entry, uint64_t targetpc) const;
  int32_t PcData(const Func& f, int index, uint64_t pc) const {
    if (static_cast<uint32_t>(index) >= f.npcdata) return -1;
    uint32_t off;
    if (!t_.U32(f.pcdata_base + 4 * index, &off)) return -1;
    return PcValue(off, f.entry, pc);
  }
  std::string FuncName(int32_t nameoff) const {
    absl::string_view s;
    if (nameoff < 0 || !t_.CString(h_.funcname_off + static_cast<uint32_t>(nameoff), &s)) {
      return "?";
    }
    return std::string(s);
  }
  std::string PrintName(absl::string_view name) const override {
    return h_.go120 ? NameForPrint(name) : std::string(name);
  }
  // funcline1: file and line at pc, ("?", 0) when unknown.
  void FileLine(const Func& f, uint64_t pc, std::string* file, int64_t* line) const;

  // FuncIDWrapper (autogenerated code: ABI and method wrappers, -fm closures, hash/eq) is the
  // last funcID of every Go 1.18-1.27 enum, right after FuncID_systemstack_switch, whose value
  // moved (20 until 1.21, 21 in 1.22-1.24, 22 from 1.25 on). runtime.systemstack_switch is always
  // linked, so its own funcID + 1 names the wrapper ID of this binary's toolchain; being the last
  // value, it is also the largest funcID in use (every binary has ABI wrappers). The two must
  // agree, else -1: wrappers are then kept in stacks rather than real functions dropped.
  int FindWrapperFuncId() const {
    static constexpr absl::string_view kAnchor = "runtime.systemstack_switch";
    const uint64_t fixed = h_.go120 ? 44 : 40;
    int anchor = -1, largest = -1;
    for (uint64_t i = 0; i < h_.nfunc; ++i) {
      uint32_t funcoff;
      int32_t nameoff;
      absl::string_view name;
      uint8_t id;
      if (!t_.U32(h_.pcln_off + 8 * i + 4, &funcoff)) return -1;
      const uint64_t off = h_.pcln_off + funcoff;
      if (!t_.U8(off + fixed - 4, &id)) continue;
      largest = std::max<int>(largest, id);
      if (anchor < 0 && t_.I32(off + 4, &nameoff) && nameoff >= 0 &&
          t_.CString(h_.funcname_off + static_cast<uint32_t>(nameoff), &name) && name == kAnchor) {
        anchor = id + 1;
      }
    }
    return anchor == largest ? anchor : -1;
  }

  std::string owned_;
  Bytes t_;
  Header h_;
  uint64_t text_start_;
  int wrapper_func_id_ = -1;
  Bytes gofunc_;
  bool have_gofunc_ = false;
  std::optional<ModuleData> md_;
};

absl::StatusOr<GoPclntabImpl::Func> GoPclntabImpl::FindFunc(uint64_t pc) const {
  if (pc < text_start_) {
    return absl::NotFoundError(absl::StrFormat("pc %#x below Go text start", pc));
  }
  const uint64_t rel = pc - text_start_;
  if (rel >= EntryOff(h_.nfunc) || rel < EntryOff(0)) {
    return absl::NotFoundError(absl::StrFormat("pc %#x outside Go functions", pc));
  }
  // Largest i in [0, nfunc) with entryoff[i] <= rel.
  uint64_t lo = 0, hi = h_.nfunc;
  while (hi - lo > 1) {
    uint64_t mid = lo + (hi - lo) / 2;
    if (EntryOff(mid) <= rel) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  absl::StatusOr<Func> f = FuncAt(lo);
  if (f.ok() && pc < f->entry) {
    return absl::DataLossError(
        absl::StrFormat("pclntab: inconsistent function table entry for pc %#x", pc));
  }
  return f;
}

absl::StatusOr<GoPclntabImpl::Func> GoPclntabImpl::FuncAt(uint64_t lo) const {
  uint32_t funcoff;
  if (!t_.U32(h_.pcln_off + 8 * lo + 4, &funcoff)) {
    return absl::DataLossError("pclntab: truncated function table");
  }
  Func f;
  f.off = h_.pcln_off + funcoff;
  uint32_t entryoff;
  const uint64_t fixed = h_.go120 ? 44 : 40;
  if (f.off + fixed > t_.size() || !t_.U32(f.off, &entryoff)) {
    return absl::DataLossError(absl::StrFormat("pclntab: _func at %#x out of bounds", f.off));
  }
  t_.I32(f.off + 4, &f.nameoff);
  t_.U32(f.off + 16, &f.pcsp);
  t_.U32(f.off + 20, &f.pcfile);
  t_.U32(f.off + 24, &f.pcln);
  t_.U32(f.off + 28, &f.npcdata);
  t_.U32(f.off + 32, &f.cu_offset);
  if (h_.go120) t_.I32(f.off + 36, &f.start_line);
  t_.U8(f.off + fixed - 4, &f.func_id);
  t_.U8(f.off + fixed - 3, &f.flag);
  t_.U8(f.off + fixed - 1, &f.nfuncdata);
  f.pcdata_base = f.off + fixed;
  f.entry = text_start_ + entryoff;
  f.end = text_start_ + EntryOff(lo + 1);
  if (entryoff != EntryOff(lo) || f.end <= f.entry) {
    return absl::DataLossError(
        absl::StrFormat("pclntab: inconsistent function table entry %d", lo));
  }
  return f;
}

int GoPclntabImpl::GofuncScore(absl::string_view gofunc) const {
  constexpr int kSample = 32;
  Bytes g(gofunc);
  const uint64_t names = h_.cu_off > h_.funcname_off ? h_.cu_off - h_.funcname_off : 0;
  const uint64_t step = h_.nfunc / (4 * kSample) + 1;
  int good = 0;
  for (uint64_t i = 0; i < h_.nfunc && good < kSample; i += step) {
    absl::StatusOr<Func> f = FuncAt(i);
    if (!f.ok() || f->nfuncdata <= kFuncdataInlTree) continue;
    uint32_t off;
    if (!t_.U32(f->pcdata_base + 4 * (static_cast<uint64_t>(f->npcdata) + kFuncdataInlTree),
                &off) ||
        off == kNoFuncdata) {
      continue;
    }
    // The first record of the tree.
    int32_t nameoff = -1, parent_pc = -1;
    uint8_t pad = 1;
    if (h_.go120) {
      uint32_t pad3 = 1;
      if (!g.U32(off, &pad3)) return -1;
      pad = (pad3 >> 8) != 0;
      g.I32(off + 4, &nameoff);
      g.I32(off + 8, &parent_pc);
    } else {
      g.U8(off + 3, &pad);
      g.I32(off + 12, &nameoff);
      g.I32(off + 16, &parent_pc);
    }
    absl::string_view name;
    if (pad != 0 || nameoff < 0 || static_cast<uint64_t>(nameoff) >= names ||
        !t_.CString(h_.funcname_off + nameoff, &name) || name.empty() ||
        (nameoff > 0 && t_.view()[h_.funcname_off + nameoff - 1] != '\0') || parent_pc < 0 ||
        static_cast<uint64_t>(parent_pc) >= f->end - f->entry) {
      return -1;
    }
    ++good;
  }
  return good;
}

int32_t GoPclntabImpl::PcValue(uint32_t off, uint64_t entry, uint64_t targetpc) const {
  if (off == 0) return -1;
  Bytes p(t_.view());
  uint64_t pos = h_.pctab_off + off;
  auto varint = [&](uint32_t* v) {
    uint32_t result = 0;
    for (int shift = 0; shift < 35; shift += 7) {
      uint8_t b;
      if (!p.U8(pos++, &b)) return false;
      result |= static_cast<uint32_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        *v = result;
        return true;
      }
    }
    return false;
  };
  uint64_t pc = entry;
  int32_t val = -1;
  while (true) {
    const bool first = pc == entry;
    uint8_t b0;
    if (!p.U8(pos, &b0)) return -1;
    if (b0 == 0 && !first) return -1;  // end of table
    uint32_t uvdelta, pcdelta;
    if (!varint(&uvdelta) || !varint(&pcdelta)) return -1;
    val += static_cast<int32_t>(-(uvdelta & 1) ^ (uvdelta >> 1));
    pc += static_cast<uint64_t>(pcdelta) * h_.min_lc;
    if (targetpc < pc) return val;
  }
}

void GoPclntabImpl::FileLine(const Func& f, uint64_t pc, std::string* file, int64_t* line) const {
  *file = "?";
  *line = 0;
  int32_t fileno = PcValue(f.pcfile, f.entry, pc);
  int32_t ln = PcValue(f.pcln, f.entry, pc);
  if (fileno < 0 || ln < 0) return;
  uint32_t fileoff;
  absl::string_view name;
  if (!t_.U32(h_.cu_off + 4 * (static_cast<uint64_t>(f.cu_offset) + fileno), &fileoff) ||
      fileoff == 0xffffffff || !t_.CString(h_.filetab_off + fileoff, &name)) {
    return;
  }
  *file = std::string(name);
  *line = ln;
}

absl::StatusOr<SourceLines> GoPclntabImpl::SymbolizeLevels(
    uint64_t pc, std::vector<uint64_t>* level_pcs) const {
  if (level_pcs) level_pcs->clear();
  absl::StatusOr<Func> f = FindFunc(pc);
  if (!f.ok()) return f.status();
  // Inline tree location (gofunc-relative), if this function has one and gofunc is known.
  std::optional<uint64_t> inl_tree;
  if (have_gofunc_ && f->nfuncdata > kFuncdataInlTree) {
    uint32_t off;
    if (t_.U32(f->pcdata_base + 4 * (static_cast<uint64_t>(f->npcdata) + kFuncdataInlTree), &off) &&
        off != kNoFuncdata) {
      inl_tree = off;
    }
  }
  const uint64_t inl_size = h_.go120 ? 16 : 20;
  SourceLines out;
  uint64_t cur = pc;
  for (int depth = 0;; ++depth) {
    SourceLine sl;
    if (level_pcs) level_pcs->push_back(cur);
    FileLine(*f, cur, &sl.file, &sl.line);
    int32_t ix = inl_tree && depth < kMaxInlineDepth ? PcData(*f, kPcdataInlTreeIndex, cur) : -1;
    bool inlined = false;
    int32_t parent_pc = 0;
    if (ix >= 0) {
      const uint64_t rec = *inl_tree + static_cast<uint64_t>(ix) * inl_size;
      int32_t nameoff, start_line = 0;
      bool ok;
      if (h_.go120) {
        ok = gofunc_.I32(rec + 4, &nameoff) && gofunc_.I32(rec + 8, &parent_pc) &&
             gofunc_.I32(rec + 12, &start_line);
      } else {
        ok = gofunc_.I32(rec + 12, &nameoff) && gofunc_.I32(rec + 16, &parent_pc);
      }
      if (ok) {
        inlined = true;
        sl.function = FuncName(nameoff);
        sl.start_line = start_line;
      }
    }
    if (!inlined) {
      sl.function = FuncName(f->nameoff);
      sl.start_line = f->start_line;
      sl.go_wrapper = wrapper_func_id_ >= 0 && f->func_id == wrapper_func_id_;
    }
    sl.system_name = sl.function;
    out.push_back(std::move(sl));
    if (!inlined) break;
    cur = f->entry + static_cast<uint32_t>(parent_pc);
  }
  return out;
}

absl::StatusOr<GoPclntab::FuncInfo> GoPclntabImpl::LookupFunc(uint64_t pc) const {
  absl::StatusOr<Func> f = FindFunc(pc);
  if (!f.ok()) return f.status();
  FuncInfo info;
  info.entry = f->entry;
  info.end = f->end;
  info.name = FuncName(f->nameoff);
  int32_t sp = PcValue(f->pcsp, f->entry, pc);
  info.sp_delta = sp < 0 ? 0 : sp;
  info.func_id = f->func_id;
  info.flag = f->flag;
  return info;
}

// ---- Locating the table and gofunc in an ELF file ----

// Reads link-time pointers from the ELF image. For PIE binaries whose slot holds zero in the file
// (externally linked), falls back to the R_X86_64_RELATIVE addend targeting that slot.
class PtrReader {
 public:
  explicit PtrReader(const ElfFile& elf) : elf_(elf) {}

  std::optional<uint64_t> Read(uint64_t vaddr) {
    std::optional<uint64_t> off = elf_.VaddrToFileOffset(vaddr);
    uint64_t v = 0;
    if (off && Bytes(elf_.data()).U64(*off, &v) && v != 0) return v;
    if (elf_.type() == 3 /* ET_DYN */) {
      LoadRelocs();
      auto it =
          std::lower_bound(relocs_.begin(), relocs_.end(), std::make_pair(vaddr, uint64_t{0}));
      if (it != relocs_.end() && it->first == vaddr) return it->second;
    }
    if (off) return v;
    return std::nullopt;
  }
  // Slot addresses whose relocation addend equals `target`.
  std::vector<uint64_t> RelocSlotsFor(uint64_t target) {
    LoadRelocs();
    std::vector<uint64_t> out;
    for (const auto& r : relocs_) {
      if (r.second == target) out.push_back(r.first);
    }
    return out;
  }

 private:
  void LoadRelocs() {
    if (relocs_loaded_) return;
    relocs_loaded_ = true;
    for (const ElfSection& s : elf_.sections()) {
      if (s.type != 4 /* SHT_RELA */) continue;
      Bytes d(elf_.SectionData(s));
      for (uint64_t o = 0; o + 24 <= d.size(); o += 24) {
        uint64_t where, info, addend;
        d.U64(o, &where);
        d.U64(o + 8, &info);
        d.U64(o + 16, &addend);
        if ((info & 0xffffffff) == 8 /* R_X86_64_RELATIVE */) relocs_.emplace_back(where, addend);
      }
    }
    std::sort(relocs_.begin(), relocs_.end());
  }

  const ElfFile& elf_;
  bool relocs_loaded_ = false;
  std::vector<std::pair<uint64_t, uint64_t>> relocs_;
};

// The bytes of the loaded image from `vaddr` to the end of its PT_LOAD file contents.
absl::string_view ImageFrom(const ElfFile& elf, uint64_t vaddr) {
  for (const ElfSegment& seg : elf.load_segments()) {
    if (vaddr >= seg.vaddr && vaddr - seg.vaddr < seg.filesz) {
      uint64_t off = seg.offset + (vaddr - seg.vaddr);
      uint64_t len = seg.filesz - (vaddr - seg.vaddr);
      absl::string_view d = elf.data();
      if (off > d.size()) return {};
      return d.substr(off, len);
    }
  }
  return {};
}

// Where the table is: its bytes (to the end of the section or segment) and its address.
struct TableAt {
  absl::string_view table;
  uint64_t vaddr = 0;
};

// The table in the first section named like *.gopclntab that is not NOBITS; none if that
// section's contents are empty (out of the file).
std::optional<TableAt> FindTableSection(const ElfFile& elf) {
  for (const char* name : {".gopclntab", ".data.rel.ro.gopclntab"}) {
    const ElfSection* s = elf.FindSection(name);
    if (s == nullptr || s->type == 8 /* SHT_NOBITS */) continue;
    TableAt at{elf.SectionData(*s), s->addr};
    if (at.table.empty()) return std::nullopt;
    return at;
  }
  return std::nullopt;
}

// The first 8-aligned valid pcHeader in the file contents of a PT_LOAD segment.
std::optional<TableAt> ScanForTable(const ElfFile& elf) {
  absl::string_view d = elf.data();
  for (const ElfSegment& seg : elf.load_segments()) {
    if (seg.offset > d.size()) continue;
    absl::string_view sd = d.substr(seg.offset, seg.filesz);
    for (size_t i = 0; i + kHeaderSize <= sd.size(); i += 8) {  // the header is 8-aligned
      if (sd[i + 4] != 0 || sd[i + 5] != 0 || sd[i + 7] != 8) continue;
      uint32_t magic;
      Bytes(sd).U32(i, &magic);
      if (magic != kMagic118 && magic != kMagic120) continue;
      if (ParseHeader(Bytes(sd.substr(i))).ok()) return TableAt{sd.substr(i), seg.vaddr + i};
    }
  }
  return std::nullopt;
}

// The table: a section named like *.gopclntab, else a magic scan of the loaded segments.
std::optional<TableAt> FindTable(const ElfFile& elf) {
  if (std::optional<TableAt> at = FindTableSection(elf)) return at;
  return ScanForTable(elf);
}

// moduledata's address: the first word points at the table, the second at funcnametab. It is in
// writable data (.noptrdata until 1.26, its own .go.module section from 1.27): the file contents
// of the writable segments are searched, whatever their sections are called; then (PIE with
// zeroed slots) the relocations, then the symbol.
std::optional<uint64_t> FindModuleData(const ElfFile& elf, PtrReader& ptrs, const TableAt& at,
                                       const Header& h) {
  const uint64_t funcnametab = at.vaddr + h.funcname_off;
  for (const ElfSegment& seg : elf.load_segments()) {
    if (!(seg.flags & 2 /* PF_W */) || seg.offset > elf.data().size()) continue;
    Bytes d(elf.data().substr(seg.offset, seg.filesz));
    for (uint64_t o = (8 - seg.vaddr % 8) % 8; o + 16 <= d.size(); o += 8) {
      uint64_t a, b;
      d.U64(o, &a);
      d.U64(o + 8, &b);
      if (a == at.vaddr && b == funcnametab) return seg.vaddr + o;
    }
  }
  if (elf.type() == 3 /* ET_DYN */) {
    for (uint64_t slot : ptrs.RelocSlotsFor(at.vaddr)) {
      if (ptrs.Read(slot + 8) == funcnametab) return slot;
    }
  }
  if (auto sym = elf.FindSymbol("runtime.firstmoduledata")) return sym->value;
  return std::nullopt;
}

// moduledata's section bounds (words 20-31), trusted only if minpc/maxpc agree with the function
// table for its text (the header's textStart if set, which 1.26+ leave zero). gofunc is not set.
std::optional<GoPclntab::ModuleData> ReadModuleData(PtrReader& ptrs, uint64_t moduledata,
                                                    const Bytes& t, const Header& h) {
  uint64_t w[32] = {};
  bool ok = true;
  for (int i = 20; i < 32 && ok; ++i) {
    std::optional<uint64_t> v = ptrs.Read(moduledata + 8 * i);
    ok = v.has_value();
    w[i] = v.value_or(0);
  }
  uint32_t first = 0, last = 0;
  t.U32(h.pcln_off, &first);
  t.U32(h.pcln_off + 8 * h.nfunc, &last);
  const uint64_t text = h.text_start != 0 ? h.text_start : w[22];
  if (!ok || text == 0 || w[22] != text || w[20] != text + first || w[21] != text + last ||
      w[24] > w[25] || w[26] > w[27] || w[28] > w[29] || w[30] > w[31]) {
    return std::nullopt;
  }
  GoPclntab::ModuleData md;
  md.addr = moduledata;
  md.text = w[22];
  md.etext = w[23];
  md.noptrdata = w[24];
  md.enoptrdata = w[25];
  md.data = w[26];
  md.edata = w[27];
  md.bss = w[28];
  md.ebss = w[29];
  md.noptrbss = w[30];
  md.enoptrbss = w[31];
  return md;
}

// textStart: the header's, else the validated moduledata.text, else runtime.text, else .text.
uint64_t TextStart(const ElfFile& elf, const Header& h,
                   const std::optional<GoPclntab::ModuleData>& md) {
  if (h.text_start != 0) return h.text_start;
  if (md && md->text != 0) return md->text;
  if (auto sym = elf.FindSymbol("runtime.text"); sym && sym->value != 0) return sym->value;
  if (const ElfSection* s = elf.FindSection(".text")) return s->addr;
  return 0;
}

// gofunc (base of funcdata, where inline trees live): the moduledata word after the section
// bounds whose inline-tree records are well-formed (its index moved in 1.20 and 1.27), else the
// symbol.
std::optional<uint64_t> FindGofunc(const ElfFile& elf, PtrReader& ptrs,
                                   std::optional<uint64_t> moduledata, const GoPclntabImpl& impl) {
  std::optional<uint64_t> gofunc;
  if (moduledata) {
    int best = 0;
    for (int i = 32; i < 56; ++i) {
      std::optional<uint64_t> v = ptrs.Read(*moduledata + 8 * i);
      if (!v || *v == 0) continue;
      absl::string_view img = ImageFrom(elf, *v);
      if (img.empty()) continue;
      const int score = impl.GofuncScore(img);
      if (score > best) {
        best = score;
        gofunc = *v;
      }
    }
  }
  if (gofunc) return gofunc;
  for (const char* name : {"go:func.*", "go.func.*"}) {
    if (auto sym = elf.FindSymbol(name)) return sym->value;
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GoPclntab>> GoPclntab::FromBytes(absl::string_view table,
                                                                uint64_t text_start) {
  Bytes t(table);
  absl::StatusOr<Header> h = ParseHeader(t);
  if (!h.ok()) return h.status();
  uint64_t text = h->text_start != 0 ? h->text_start : text_start;
  return std::unique_ptr<GoPclntab>(new GoPclntabImpl(std::string(table), table, *h, text));
}

absl::StatusOr<std::unique_ptr<GoPclntab>> GoPclntab::FromElf(const ElfFile& elf) {
  std::optional<TableAt> at = FindTable(elf);
  if (!at) return absl::NotFoundError("no Go pclntab in ELF file");
  absl::StatusOr<Header> h = ParseHeader(Bytes(at->table));
  if (!h.ok()) return h.status();

  PtrReader ptrs(elf);
  const std::optional<uint64_t> moduledata = FindModuleData(elf, ptrs, *at, *h);
  std::optional<GoPclntab::ModuleData> md;
  if (moduledata) md = ReadModuleData(ptrs, *moduledata, Bytes(at->table), *h);
  auto impl = std::make_unique<GoPclntabImpl>(std::string(), at->table, *h, TextStart(elf, *h, md));

  const std::optional<uint64_t> gofunc = FindGofunc(elf, ptrs, moduledata, *impl);
  if (gofunc) {
    absl::string_view img = ImageFrom(elf, *gofunc);
    if (!img.empty()) impl->SetGofunc(img);
  }
  if (md) {
    md->gofunc = gofunc.value_or(0);
    impl->SetModuleData(*md);
  }
  return std::unique_ptr<GoPclntab>(std::move(impl));
}

}  // namespace pprof_sidecar
