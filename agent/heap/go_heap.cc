#include "agent/heap/go_heap.h"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/symbolize/go_code.h"

namespace pprof_sidecar {
namespace {

// runtime.bucket header: next, allnext, typ, hash, size, nstk (one word each).
constexpr size_t kBucketHeaderSize = 6 * 8;
constexpr uint64_t kMemProfileBucketType = 1;  // runtime.memProfile
// memRecord: active + future[3], each memRecordCycle of 4 words.
constexpr size_t kMemRecordWords = 4 * 4;
constexpr int kMaxReadAttempts = 4;
constexpr size_t kSpeculativeStack = 32;  // maxStack before Go 1.23

bool InSection(const ElfSection& s, uint64_t addr, uint64_t len) {
  return s.addr != 0 && addr >= s.addr && addr - s.addr <= s.size &&
         s.size - (addr - s.addr) >= len;
}

// Writable, allocated, non-TLS data section containing [addr, addr+len).
const ElfSection* DataSectionOf(const ElfFile& elf, uint64_t addr, uint64_t len) {
  for (const ElfSection& s : elf.sections()) {
    if ((s.flags & SHF_ALLOC) && (s.flags & SHF_WRITE) && !(s.flags & SHF_TLS) &&
        InSection(s, addr, len)) {
      return &s;
    }
  }
  return nullptr;
}

}  // namespace

std::vector<RipLoad> FindRipRelativeLoads(absl::string_view code, uint64_t code_addr, bool wide) {
  std::vector<RipLoad> out;
  const auto* p = reinterpret_cast<const uint8_t*>(code.data());
  const size_t n = code.size();
  for (size_t i = 0; i < n; ++i) {
    size_t op;  // index of the 0x8B opcode
    int rex_r = 0;
    if (wide) {
      if ((p[i] & 0xF8) != 0x48) continue;  // REX with W set
      rex_r = (p[i] & 0x04) ? 8 : 0;
      op = i + 1;
    } else {
      if (p[i] != 0x8B) continue;
      if (i > 0 && (p[i - 1] & 0xF8) == 0x48) continue;  // that is a 64-bit load
      if (i > 0 && (p[i - 1] & 0xF0) == 0x40) rex_r = (p[i - 1] & 0x04) ? 8 : 0;
      op = i;
    }
    if (op + 6 > n || p[op] != 0x8B || (p[op + 1] & 0xC7) != 0x05) continue;
    int32_t disp;
    memcpy(&disp, p + op + 2, 4);
    RipLoad l;
    l.end = op + 6;
    l.target = code_addr + l.end + static_cast<int64_t>(disp);
    l.reg = rex_r | ((p[op + 1] >> 3) & 7);
    out.push_back(l);
  }
  return out;
}

bool IsCmpImm8At(absl::string_view code, size_t offset, int reg, int8_t imm) {
  const auto* p = reinterpret_cast<const uint8_t*>(code.data());
  const size_t n = code.size();
  size_t i = offset;
  // Skip NOP padding: 90, 66 90, 0f 1f /0 (with SIB/disp forms up to 9 bytes).
  for (int k = 0; k < 4 && i < n; ++k) {
    if (p[i] == 0x90) {
      i += 1;
    } else if (i + 1 < n && p[i] == 0x66 && p[i + 1] == 0x90) {
      i += 2;
    } else if (i + 2 < n && p[i] == 0x0F && p[i + 1] == 0x1F) {
      const uint8_t modrm = p[i + 2];
      size_t len = 3;
      if ((modrm & 0xC7) == 0x04 || (modrm & 0xC7) == 0x44 || (modrm & 0xC7) == 0x84) ++len;
      if ((modrm & 0xC0) == 0x40) len += 1;
      if ((modrm & 0xC0) == 0x80) len += 4;
      i += len;
    } else if (i + 3 < n && p[i] == 0x66 && p[i + 1] == 0x0F && p[i + 2] == 0x1F) {
      const uint8_t modrm = p[i + 3];
      size_t len = 4;
      if ((modrm & 0xC7) == 0x04 || (modrm & 0xC7) == 0x44 || (modrm & 0xC7) == 0x84) ++len;
      if ((modrm & 0xC0) == 0x40) len += 1;
      if ((modrm & 0xC0) == 0x80) len += 4;
      i += len;
    } else {
      break;
    }
  }
  if (i + 4 > n) return false;
  const uint8_t rex = p[i];
  if ((rex & 0xFA) != 0x48) return false;  // REX.W, optionally REX.B; no REX.R/X
  if (p[i + 1] != 0x83 || (p[i + 2] & 0xF8) != 0xF8) return false;  // 83 /7, mod=11
  const int r = ((rex & 1) ? 8 : 0) | (p[i + 2] & 7);
  return r == reg && static_cast<int8_t>(p[i + 3]) == imm;
}

absl::StatusOr<GoHeapVars> LocateGoHeapVarsBySymtab(const ElfFile& elf) {
  GoHeapVars v;
  auto get = [&elf](const char* name, uint64_t* out) {
    std::optional<ElfSymbol> s = elf.FindSymbol(name);
    if (!s || s->value == 0) return false;
    *out = s->value;
    return true;
  };
  if (!get("runtime.mbuckets", &v.mbuckets) || !get("runtime.mProfCycle", &v.mprof_cycle) ||
      !get("runtime.MemProfileRate", &v.mem_profile_rate)) {
    return absl::NotFoundError("runtime heap profile variables not in the symbol table");
  }
  v.method = "symtab";
  return v;
}

absl::StatusOr<GoHeapVars> LocateGoHeapVarsFromCode(const ElfFile& elf, const GoPclntab& pcln) {
  static const char kFlush[] = "runtime.mProf_FlushLocked";
  static const char kPostSweep[] = "runtime.mProf_PostSweep";
  static const char kProfileAlloc[] = "runtime.profilealloc";
  auto funcs = FindGoFuncs(pcln, {kFlush, kPostSweep, kProfileAlloc});
  for (const char* n : {kFlush, kPostSweep, kProfileAlloc}) {
    if (!funcs.count(n)) {
      return absl::NotFoundError(absl::StrCat("function ", n, " not found in the Go pclntab"));
    }
  }
  GoHeapVars v;
  v.method = "code";
  // mbuckets: the distinct 64-bit RIP-relative load target in writable data.
  {
    absl::StatusOr<absl::string_view> code = GoFunctionCode(elf, funcs[kFlush]);
    if (!code.ok()) return code.status();
    std::vector<uint64_t> targets;
    for (const RipLoad& l : FindRipRelativeLoads(*code, funcs[kFlush].entry, true)) {
      if (DataSectionOf(elf, l.target, 8) &&
          std::find(targets.begin(), targets.end(), l.target) == targets.end()) {
        targets.push_back(l.target);
      }
    }
    if (targets.size() != 1) {
      return absl::NotFoundError(absl::StrCat("runtime.mbuckets: expected one data load in ",
                                              kFlush, ", found ", targets.size()));
    }
    v.mbuckets = targets[0];
  }
  // mProfCycle: the first 32-bit RIP-relative load in writable data.
  {
    absl::StatusOr<absl::string_view> code = GoFunctionCode(elf, funcs[kPostSweep]);
    if (!code.ok()) return code.status();
    for (const RipLoad& l : FindRipRelativeLoads(*code, funcs[kPostSweep].entry, false)) {
      if (DataSectionOf(elf, l.target, 4)) {
        v.mprof_cycle = l.target;
        break;
      }
    }
    if (v.mprof_cycle == 0) {
      return absl::NotFoundError(
          absl::StrCat("runtime.mProfCycle: no 32-bit data load in ", kPostSweep));
    }
  }
  // MemProfileRate: the 64-bit load compared with 1 right after (mcache0's is tested for nil).
  {
    absl::StatusOr<absl::string_view> code = GoFunctionCode(elf, funcs[kProfileAlloc]);
    if (!code.ok()) return code.status();
    std::vector<uint64_t> targets;
    for (const RipLoad& l : FindRipRelativeLoads(*code, funcs[kProfileAlloc].entry, true)) {
      if (DataSectionOf(elf, l.target, 8) && IsCmpImm8At(*code, l.end, l.reg, 1) &&
          std::find(targets.begin(), targets.end(), l.target) == targets.end()) {
        targets.push_back(l.target);
      }
    }
    if (targets.size() != 1) {
      return absl::NotFoundError(absl::StrCat("runtime.MemProfileRate: expected one load compared ",
                                              "with 1 in ", kProfileAlloc, ", found ",
                                              targets.size()));
    }
    v.mem_profile_rate = targets[0];
  }
  if (v.mbuckets == v.mprof_cycle || v.mbuckets == v.mem_profile_rate ||
      v.mprof_cycle == v.mem_profile_rate) {
    return absl::NotFoundError("runtime heap profile variables decoded to overlapping addresses");
  }
  return v;
}

absl::StatusOr<GoHeapVars> LocateGoHeapVars(const ElfFile& elf, const GoPclntab& pcln) {
  absl::StatusOr<GoHeapVars> v = LocateGoHeapVarsBySymtab(elf);
  if (v.ok()) return v;
  absl::StatusOr<GoHeapVars> c = LocateGoHeapVarsFromCode(elf, pcln);
  if (c.ok()) return c;
  return absl::NotFoundError(absl::StrCat("cannot locate the Go runtime's heap profile: ",
                                          v.status().message(), "; ", c.status().message()));
}

absl::StatusOr<GoHeapSnapshot> ReadGoHeap(MemoryReader& mem, const GoHeapVars& vars,
                                          const GoHeapReadLimits& limits) {
  absl::StatusOr<uint64_t> rate = mem.ReadU64(vars.mem_profile_rate);
  if (!rate.ok()) return rate.status();
  if (static_cast<int64_t>(*rate) <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "memory profiling is disabled in the target: runtime.MemProfileRate is ",
        static_cast<int64_t>(*rate),
        " (the program set it to 0, or the linker turned profiling off because nothing in the "
        "binary can read a heap profile: import runtime/pprof or net/http/pprof, or reference "
        "runtime.MemProfile, to keep it on)"));
  }
  struct RawBucket {
    GoHeapRecord rec;
    uint64_t cyc[4][4];  // active, future[0..2]; each allocs, frees, alloc_bytes, free_bytes
  };
  GoHeapSnapshot snap;
  snap.mem_profile_rate = static_cast<int64_t>(*rate);
  std::vector<RawBucket> raw;
  uint32_t cycle_word = 0;
  for (int attempt = 0;; ++attempt) {
    raw.clear();
    absl::StatusOr<uint32_t> c0 = mem.ReadU32(vars.mprof_cycle);
    if (!c0.ok()) return c0.status();
    absl::StatusOr<uint64_t> head = mem.ReadU64(vars.mbuckets);
    if (!head.ok()) return head.status();
    std::vector<uint64_t> words;
    for (uint64_t b = *head; b != 0;) {
      if (raw.size() >= limits.max_buckets) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "more than ", limits.max_buckets, " heap profile buckets (or a cyclic list)"));
      }
      if (b % 8 != 0) {
        return absl::DataLossError(absl::StrCat("misaligned heap bucket 0x", absl::Hex(b)));
      }
      // One read covers the header, up to kSpeculativeStack frames and the memRecord; deeper
      // stacks (Go 1.23+) or the end of a mapping need a second, exact read.
      words.resize(6 + kSpeculativeStack + kMemRecordWords);
      absl::StatusOr<size_t> got = mem.ReadPartial(b, words.data(), words.size() * 8);
      if (!got.ok() || *got < kBucketHeaderSize) {
        if (absl::Status st = mem.Read(b, words.data(), kBucketHeaderSize); !st.ok()) return st;
        got = kBucketHeaderSize;
      }
      uint64_t hdr[6];
      memcpy(hdr, words.data(), sizeof(hdr));
      const uint64_t typ = hdr[2], size = hdr[4], nstk = hdr[5];
      if (typ != kMemProfileBucketType || nstk > limits.max_stack) {
        return absl::DataLossError(absl::StrCat("heap bucket 0x", absl::Hex(b),
                                                " is not a memory profile bucket (type ", typ, ", ",
                                                nstk, " frames)"));
      }
      const size_t need = 6 + nstk + kMemRecordWords;
      if (need > words.size() || *got < need * 8) {
        words.resize(need);
        if (absl::Status st = mem.Read(b, words.data(), need * 8); !st.ok()) return st;
      }
      words.erase(words.begin(), words.begin() + 6);
      RawBucket rb;
      rb.rec.bucket = b;
      rb.rec.size = size;
      rb.rec.stack.assign(words.begin(), words.begin() + nstk);
      memcpy(rb.cyc, words.data() + nstk, sizeof(rb.cyc));
      raw.push_back(std::move(rb));
      b = hdr[1];  // allnext
    }
    absl::StatusOr<uint32_t> c1 = mem.ReadU32(vars.mprof_cycle);
    if (!c1.ok()) return c1.status();
    cycle_word = *c1;
    // A GC that published or flushed a cycle while we walked may have moved counts between
    // future[] and active: read again.
    if (*c0 == *c1 || attempt + 1 >= kMaxReadAttempts) break;
    ++snap.retries;
  }
  // As runtime.MemProfile: fold the current cycle's future into active (it does so under lock
  // when called between mProf_NextCycle and mProf_Flush; after the flush that slot is zero).
  snap.cycle = cycle_word >> 1;
  const int index = 1 + static_cast<int>(snap.cycle % 3);
  bool clear = true;
  for (RawBucket& rb : raw) {
    for (int k = 0; k < 4; ++k) rb.cyc[0][k] += rb.cyc[index][k];
    if (rb.cyc[0][0] != 0 || rb.cyc[0][1] != 0) clear = false;
  }
  if (clear) {
    // No GC has published a cycle yet: MemProfile then accumulates all future cycles.
    snap.no_gc_yet = true;
    for (RawBucket& rb : raw) {
      for (int f = 1; f <= 3; ++f) {
        if (f == index) continue;
        for (int k = 0; k < 4; ++k) rb.cyc[0][k] += rb.cyc[f][k];
      }
    }
  }
  snap.records.reserve(raw.size());
  for (RawBucket& rb : raw) {
    rb.rec.allocs = static_cast<int64_t>(rb.cyc[0][0]);
    rb.rec.frees = static_cast<int64_t>(rb.cyc[0][1]);
    rb.rec.alloc_bytes = static_cast<int64_t>(rb.cyc[0][2]);
    rb.rec.free_bytes = static_cast<int64_t>(rb.cyc[0][3]);
    snap.records.push_back(std::move(rb.rec));
  }
  return snap;
}

GoHeapSnapshot SubtractGoHeap(const GoHeapSnapshot& b, const GoHeapSnapshot& a) {
  std::map<uint64_t, const GoHeapRecord*> old;
  for (const GoHeapRecord& r : a.records) old[r.bucket] = &r;
  GoHeapSnapshot d;
  d.mem_profile_rate = b.mem_profile_rate;
  d.cycle = b.cycle;
  d.no_gc_yet = b.no_gc_yet;
  d.retries = a.retries + b.retries;
  for (const GoHeapRecord& r : b.records) {
    GoHeapRecord x = r;
    auto it = old.find(r.bucket);
    if (it != old.end()) {
      x.allocs -= it->second->allocs;
      x.frees -= it->second->frees;
      x.alloc_bytes -= it->second->alloc_bytes;
      x.free_bytes -= it->second->free_bytes;
    }
    if (x.allocs == 0 && x.frees == 0 && x.alloc_bytes == 0 && x.free_bytes == 0) continue;
    d.records.push_back(std::move(x));
  }
  return d;
}

}  // namespace pprof_sidecar
