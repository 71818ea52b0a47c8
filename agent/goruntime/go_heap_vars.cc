#include "agent/goruntime/go_heap_vars.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "agent/goruntime/go_vars.h"
#include "agent/symbolize/go_buildinfo.h"

namespace pprof_sidecar {
namespace {

constexpr uint64_t kDefaultMemProfileRate = 512 * 1024;
// The newest release whose layouts the agent knows (tests cover every release up to it).
constexpr int kNewestKnownMinor = 27;

// The heap profile's variables and the runtime functions that use them in the Go source of
// every release from 1.19 (go_vars.h). stkbucket links new buckets in through &mbuckets (an
// LEA). mProfCycle's functions take the addresses of the profile's locks, so only real 4-byte
// accesses count for it. MemProfileRate holds 512*1024 in the file (1.20+), or lives in
// .noptrbss (1.19 initializes it at run time).
const std::vector<GoVarSpec>& Specs() {
  static const auto* specs = new std::vector<GoVarSpec>{
      {"runtime.mbuckets",
       8,
       {GoDataClass::kBss},
       {"runtime.mProf_FlushLocked", "runtime.memProfileInternal", "runtime.MemProfile",
        "runtime.iterate_memprof", "runtime.mProf_Flush", "runtime.mProf_PostSweep",
        "runtime.stkbucket"},
       true},
      {"runtime.mProfCycle",
       4,
       {GoDataClass::kNoptrBss},
       {"runtime.mProf_NextCycle", "runtime.mProf_Flush", "runtime.mProf_PostSweep",
        "runtime.mProf_Malloc", "runtime.mProf_Free", "runtime.memProfileInternal",
        "runtime.MemProfile"}},
      {"runtime.MemProfileRate",
       8,
       {GoDataClass::kNoptrData, GoDataClass::kNoptrBss},
       {"runtime.profilealloc", "runtime.nextSample", "runtime.schedinit", "runtime.mallocgc",
        "runtime.mallocgcLarge", "runtime.mallocgcTiny", "runtime.mallocgcSmallNoscan",
        "runtime.mallocgcSmallScanNoHeader", "runtime.mallocgcSmallScanHeader",
        "runtime.allocmcache"},
       false,
       kDefaultMemProfileRate},
  };
  return *specs;
}

}  // namespace

int GoHeapCycleWords(absl::string_view go_version) {
  std::optional<GoRelease> r = ParseGoRelease(go_version);
  return r && r->minor < 27 ? 4 : 2;
}

absl::StatusOr<GoHeapVars> LocateGoHeapVarsBySymtab(const ElfFile& elf) {
  GoHeapVars v;
  uint64_t* out[] = {&v.mbuckets, &v.mprof_cycle, &v.mem_profile_rate};
  for (size_t i = 0; i < Specs().size(); ++i) {
    std::optional<uint64_t> a = FindGoVarBySymtab(elf, Specs()[i].name);
    if (!a) return absl::NotFoundError("runtime heap profile variables not in the symbol table");
    *out[i] = *a;
  }
  v.method = "symtab";
  return v;
}

absl::StatusOr<GoHeapVars> LocateGoHeapVarsFromCode(const ElfFile& elf, const GoPclntab& pcln) {
  absl::StatusOr<std::vector<GoVarLocation>> locs = LocateGoVarsFromCode(elf, pcln, Specs());
  if (!locs.ok()) return locs.status();
  GoHeapVars v;
  v.method = "code";
  uint64_t* out[] = {&v.mbuckets, &v.mprof_cycle, &v.mem_profile_rate};
  for (size_t i = 0; i < Specs().size(); ++i) {
    *out[i] = (*locs)[i].addr;
    absl::StrAppend(&v.census, v.census.empty() ? "" : " ", (*locs)[i].votes, "/",
                    (*locs)[i].anchors_present);
  }
  return v;
}

absl::StatusOr<GoHeapVars> LocateGoHeapVars(const ElfFile& elf, const GoPclntab& pcln) {
  absl::StatusOr<std::string> version = GoBuildVersion(elf);
  const std::string release = version.ok() ? *version : "an unknown Go release";
  absl::StatusOr<GoHeapVars> v = LocateGoHeapVarsBySymtab(elf);
  if (!v.ok()) {
    absl::StatusOr<GoHeapVars> c = LocateGoHeapVarsFromCode(elf, pcln);
    if (!c.ok()) {
      std::optional<GoRelease> r = version.ok() ? ParseGoRelease(*version) : std::nullopt;
      const bool newer = r && r->minor > kNewestKnownMinor;
      return absl::NotFoundError(absl::StrCat(
          "cannot locate the Go runtime's heap profile in a binary built with ", release,
          newer ? absl::StrCat(" (newer than go1.", kNewestKnownMinor,
                               ", the newest release this agent knows)")
                : "",
          ": ", v.status().message(), "; ", c.status().message()));
    }
    v = std::move(c);
  }
  v->go_version = version.ok() ? *version : "";
  v->cycle_words = GoHeapCycleWords(v->go_version);
  return v;
}

}  // namespace pprof_sidecar
