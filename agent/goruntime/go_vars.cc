#include "agent/goruntime/go_vars.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/symbolize/go_code.h"
#include "agent/symbolize/x86_decode.h"

namespace pprof_sidecar {
namespace {

const char* ClassName(GoDataClass c) {
  switch (c) {
    case GoDataClass::kNoptrData:
      return ".noptrdata";
    case GoDataClass::kData:
      return ".data";
    case GoDataClass::kBss:
      return ".bss";
    case GoDataClass::kNoptrBss:
      return ".noptrbss";
    default:
      return "other";
  }
}

bool In(uint64_t lo, uint64_t hi, uint64_t addr, uint64_t len) {
  return lo != 0 && addr >= lo && addr < hi && hi - addr >= len;
}

// The 8-byte value stored in the file at `addr` (nullopt for .bss-like or unmapped addresses).
std::optional<uint64_t> FileWord(const ElfFile& elf, uint64_t addr) {
  std::optional<uint64_t> off = elf.VaddrToFileOffset(addr);
  absl::string_view d = elf.data();
  if (!off || *off > d.size() || d.size() - *off < 8) return std::nullopt;
  uint64_t v;
  memcpy(&v, d.data() + *off, 8);
  return v;
}

absl::StatusOr<GoVarLocation> Census(const ElfFile& elf, const GoPclntab& pcln,
                                     const GoVarSpec& spec,
                                     const std::map<std::string, GoPclntab::FuncInfo>& funcs) {
  std::map<uint64_t, int> votes;
  GoVarLocation r;
  r.method = "code";
  for (const std::string& fn : spec.anchors) {
    auto it = funcs.find(fn);
    if (it == funcs.end()) continue;
    absl::StatusOr<absl::string_view> code = GoFunctionCode(elf, it->second);
    if (!code.ok()) continue;
    ++r.anchors_present;
    std::set<uint64_t> seen;
    for (const RipRef& ref : FindRipReferences(*code, it->second.entry)) {
      const bool counts = ref.bytes == spec.bytes || (spec.address_taken_counts && ref.bytes == 0);
      if (!counts || !seen.insert(ref.target).second) continue;
      const GoDataClass c = GoDataClassOf(elf, pcln, ref.target, spec.bytes);
      if (std::find(spec.classes.begin(), spec.classes.end(), c) == spec.classes.end()) continue;
      if (c == GoDataClass::kNoptrData && spec.noptrdata_value != 0 &&
          FileWord(elf, ref.target) != spec.noptrdata_value) {
        continue;
      }
      ++votes[ref.target];
    }
  }
  int second = 0;
  for (const auto& [addr, n] : votes) {
    if (n > r.votes) {
      second = r.votes;
      r.votes = n;
      r.addr = addr;
    } else if (n > second) {
      second = n;
    }
  }
  std::string where;
  for (GoDataClass c : spec.classes) {
    absl::StrAppend(&where, where.empty() ? "" : " or ", ClassName(c));
  }
  if (r.votes < 2 || second == r.votes) {
    return absl::NotFoundError(absl::StrCat(
        spec.name, ": no ", spec.bytes, "-byte ", where, " word accessed by at least two of its ",
        r.anchors_present, " anchor functions found (", absl::StrJoin(spec.anchors, ", "),
        "); best ", r.votes, second == r.votes && r.votes > 0 ? " (tied)" : ""));
  }
  return r;
}

}  // namespace

GoDataClass GoDataClassOf(const ElfFile& elf, const GoPclntab& pcln, uint64_t addr, uint64_t len) {
  if (const auto& md = pcln.module_data()) {
    if (In(md->noptrdata, md->enoptrdata, addr, len)) return GoDataClass::kNoptrData;
    if (In(md->data, md->edata, addr, len)) return GoDataClass::kData;
    if (In(md->bss, md->ebss, addr, len)) return GoDataClass::kBss;
    if (In(md->noptrbss, md->enoptrbss, addr, len)) return GoDataClass::kNoptrBss;
    return GoDataClass::kOther;
  }
  for (const ElfSection& s : elf.sections()) {
    if (!In(s.addr, s.addr + s.size, addr, len)) continue;
    if (s.name == ".noptrdata") return GoDataClass::kNoptrData;
    if (s.name == ".data") return GoDataClass::kData;
    if (s.name == ".bss") return GoDataClass::kBss;
    if (s.name == ".noptrbss") return GoDataClass::kNoptrBss;
  }
  return GoDataClass::kOther;
}

std::optional<uint64_t> FindGoVarBySymtab(const ElfFile& elf, const std::string& name) {
  std::optional<ElfSymbol> s = elf.FindSymbol(name);
  if (!s || s->value == 0) return std::nullopt;
  return s->value;
}

absl::StatusOr<std::vector<GoVarLocation>> LocateGoVarsFromCode(
    const ElfFile& elf, const GoPclntab& pcln, const std::vector<GoVarSpec>& specs) {
  std::vector<std::string> names;
  for (const GoVarSpec& spec : specs) {
    names.insert(names.end(), spec.anchors.begin(), spec.anchors.end());
  }
  const std::map<std::string, GoPclntab::FuncInfo> funcs = FindGoFuncs(pcln, names);
  std::vector<GoVarLocation> out;
  std::vector<std::string> errors;
  std::set<uint64_t> addrs;
  for (const GoVarSpec& spec : specs) {
    absl::StatusOr<GoVarLocation> r = Census(elf, pcln, spec, funcs);
    if (!r.ok()) {
      errors.emplace_back(r.status().message());
      continue;
    }
    if (!addrs.insert(r->addr).second) {
      errors.push_back(absl::StrCat(spec.name, " decoded to the address of another variable"));
    }
    out.push_back(*r);
  }
  if (!errors.empty()) return absl::NotFoundError(absl::StrJoin(errors, "; "));
  return out;
}

absl::StatusOr<std::vector<GoVarLocation>> LocateGoVars(const ElfFile& elf, const GoPclntab& pcln,
                                                        const std::vector<GoVarSpec>& specs) {
  std::vector<GoVarLocation> out;
  for (const GoVarSpec& spec : specs) {
    std::optional<uint64_t> a = FindGoVarBySymtab(elf, spec.name);
    if (!a) return LocateGoVarsFromCode(elf, pcln, specs);
    out.push_back(GoVarLocation{*a, "symtab", 0, 0});
  }
  return out;
}

}  // namespace pprof_sidecar
