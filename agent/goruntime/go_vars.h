// Locating a Go runtime variable in a binary: by its .symtab name, or, in stripped (-s -w)
// binaries, by a census of the runtime functions that use it.
//
// The census: every RIP-relative memory operand of the variable's anchor functions (runtime
// functions that use it in the Go source of every release covered) is decoded (x86_decode.h),
// and the variable is the address that
//   - lies in the data section its type puts it in (moduledata's bounds, else section names),
//   - is accessed with the variable's width (or has its address taken, when that counts),
//   - if in .noptrdata with a known initial value, holds that value in the file,
//   - and is accessed by the most anchors: at least two, strictly more than any other address.
// A function missing in a release (renamed, inlined) only lowers the count.
#ifndef PPROF_SIDECAR_AGENT_GORUNTIME_GO_VARS_H_
#define PPROF_SIDECAR_AGENT_GORUNTIME_GO_VARS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/symbolize/elf_file.h"
#include "agent/symbolize/go_pclntab.h"

namespace pprof_sidecar {

enum class GoDataClass { kOther, kNoptrData, kData, kBss, kNoptrBss };

// The Go data section holding [addr, addr+len).
GoDataClass GoDataClassOf(const ElfFile& elf, const GoPclntab& pcln, uint64_t addr, uint64_t len);

struct GoVarSpec {
  std::string name;  // "runtime.allglen"
  int bytes = 8;     // access width
  std::vector<GoDataClass> classes;
  std::vector<std::string> anchors;
  bool address_taken_counts = false;  // an LEA of the variable is a vote too
  uint64_t noptrdata_value = 0;       // if in .noptrdata, the value the file must hold (0: any)
};

struct GoVarLocation {
  uint64_t addr = 0;                   // link-time
  std::string method;                  // "symtab" or "code"
  int votes = 0, anchors_present = 0;  // for "code"
};

// By .symtab name; nullopt if absent.
std::optional<uint64_t> FindGoVarBySymtab(const ElfFile& elf, const std::string& name);

// By census, one result per spec in order; NotFound naming every variable that could not be
// located. Distinct specs must not decode to the same address.
absl::StatusOr<std::vector<GoVarLocation>> LocateGoVarsFromCode(
    const ElfFile& elf, const GoPclntab& pcln, const std::vector<GoVarSpec>& specs);

// Symtab for all (when every name is there), else census for all.
absl::StatusOr<std::vector<GoVarLocation>> LocateGoVars(const ElfFile& elf, const GoPclntab& pcln,
                                                        const std::vector<GoVarSpec>& specs);

}  // namespace pprof_sidecar

#endif  // PPROF_SIDECAR_AGENT_GORUNTIME_GO_VARS_H_
