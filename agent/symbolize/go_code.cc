#include "agent/symbolize/go_code.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace pprof_sidecar {

std::map<std::string, GoPclntab::FuncInfo> FindGoFuncs(const GoPclntab& pcln,
                                                       const std::vector<std::string>& names) {
  std::map<std::string, GoPclntab::FuncInfo> found;
  uint64_t pc = pcln.min_pc();
  size_t steps = 0;
  while (pc < pcln.max_pc() && found.size() < names.size() && steps++ <= pcln.num_funcs()) {
    absl::StatusOr<GoPclntab::FuncInfo> f = pcln.LookupFunc(pc);
    if (!f.ok() || f->end <= pc) break;
    for (const std::string& n : names) {
      if (f->name == n) found.emplace(n, *f);
    }
    pc = f->end;
  }
  return found;
}

absl::StatusOr<absl::string_view> GoFunctionCode(const ElfFile& elf, const GoPclntab::FuncInfo& f) {
  std::optional<uint64_t> off = elf.VaddrToFileOffset(f.entry);
  const uint64_t len = f.end > f.entry ? f.end - f.entry : 0;
  absl::string_view data = elf.data();
  if (!off || len == 0 || len > (1u << 20) || *off > data.size() || data.size() - *off < len) {
    return absl::DataLossError(
        absl::StrCat("code of ", f.name, " at 0x", absl::Hex(f.entry), " is not in the file"));
  }
  return data.substr(*off, len);
}

namespace {

bool IsCallTo(const char* p, uint64_t ret, uint64_t target) {
  if (static_cast<uint8_t>(p[0]) != 0xE8) return false;
  int32_t rel;
  memcpy(&rel, p + 1, sizeof(rel));
  return ret + static_cast<int64_t>(rel) == target;
}

}  // namespace

std::vector<uint64_t> FindDirectCallReturns(absl::string_view code, uint64_t code_addr,
                                            uint64_t target) {
  std::vector<uint64_t> out;
  for (size_t i = 0; i + 5 <= code.size(); ++i) {
    const uint64_t ret = code_addr + i + 5;
    if (IsCallTo(code.data() + i, ret, target)) out.push_back(ret);
  }
  return out;
}

bool IsDirectCallReturn(const ElfFile& elf, uint64_t ret, uint64_t target) {
  if (ret < 5) return false;
  std::optional<uint64_t> off = elf.VaddrToFileOffset(ret - 5);
  absl::string_view data = elf.data();
  if (!off || *off > data.size() || data.size() - *off < 5) return false;
  return IsCallTo(data.data() + *off, ret, target);
}

absl::StatusOr<GoCgoCall> FindGoCgoCall(const ElfFile& elf, const GoPclntab& pcln) {
  static const char kCgocall[] = "runtime.cgocall";
  static const char kAsmcgocall[] = "runtime.asmcgocall";
  auto funcs = FindGoFuncs(pcln, {kCgocall, kAsmcgocall});
  if (!funcs.count(kCgocall) || !funcs.count(kAsmcgocall)) {
    return absl::NotFoundError("runtime.cgocall/runtime.asmcgocall not in the Go pclntab");
  }
  const GoPclntab::FuncInfo& cgocall = funcs[kCgocall];
  absl::StatusOr<absl::string_view> code = GoFunctionCode(elf, cgocall);
  if (!code.ok()) return code.status();
  std::vector<uint64_t> rets =
      FindDirectCallReturns(*code, cgocall.entry, funcs[kAsmcgocall].entry);
  if (rets.size() != 1) {
    return absl::NotFoundError(absl::StrCat("expected one call to ", kAsmcgocall, " in ", kCgocall,
                                            ", found ", rets.size()));
  }
  GoCgoCall c;
  c.cgocall_entry = cgocall.entry;
  c.asmcgocall_return = rets[0];
  return c;
}

}  // namespace pprof_sidecar
